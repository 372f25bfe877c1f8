import sys

from taseg_ros.cli import main

sys.exit(main())
