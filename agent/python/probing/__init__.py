"""probing: look inside a running Python / PyTorch process.

In the probed process the agent serves @probing-<pid>; from anywhere,
`probing.connect(pid=...)` talks to it.
"""
__version__ = "0.1.0"
