"""An example twophase plugin package."""
