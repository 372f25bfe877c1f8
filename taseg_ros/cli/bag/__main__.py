"""`python -m taseg_ros.cli.bag ...`: the same as `taseg bag ...`."""
import sys

from taseg_ros.cli.bag import main

sys.exit(main())
