"""Bone labels for unlabelled non-contrast chest CTs (``x2br label-bones``): chest inspection
(chest.py), atlas registration (register.py), label transfer (transfer.py), anatomy repairs
(anatomy_checks.py), per-bone checks (checks.py), QA pictures (qa.py), the pipeline
(labeller.py) and the command (commands.py); virtual_ct.py makes cases with known truth."""
