"""Training: devices and strategies, compiling, callbacks with their own state, and the fit loop."""
