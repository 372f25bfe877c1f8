"""`python -m taseg_ros.cli ...`: the same as `taseg ...` (torchrun starts it so)."""
from taseg_ros.cli import exit_as_module, main

exit_as_module(main())
