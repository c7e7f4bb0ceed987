"""Deploying a trained run: a model that takes raw images (serving.py), exports of it, and a server."""
