"""Recipes: one module per command, its config class + main(cfg), readable top to bottom."""
