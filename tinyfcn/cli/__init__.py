"""tinyfcn's command-line programs (console scripts installed by pip)."""
