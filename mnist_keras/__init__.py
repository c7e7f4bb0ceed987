"""mnist-keras: declarative YAML model specs compiled into keras.Sequential models."""

__version__ = "0.1.0"
