"""`python -m pipeline.leaderboard` (pipeline.leaderboard.cli)."""
import sys

from pipeline.leaderboard.cli import main

sys.exit(main())
