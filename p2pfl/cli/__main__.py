import sys

from p2pfl.cli.app import main

sys.exit(main())
