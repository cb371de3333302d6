"""The command line: argv, Hydra, signals, exit codes and the checks that run before anything loads.

The top layer: only this package touches sys.argv, HydraConfig and the process's exit status.
"""
