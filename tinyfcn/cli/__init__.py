"""The commands tinyfcn installs (console scripts); each module has `main(argv=None)`."""
