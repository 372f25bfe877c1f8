"""`python -m taseg_ros.cli.bag ...`: the same as `taseg bag ...`."""
from taseg_ros.cli import exit_as_module
from taseg_ros.cli.bag import main

exit_as_module(main())
