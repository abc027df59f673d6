"""The sandbox: a secure container launcher built from Linux primitives."""
