"""Retrain the teacher weights shipped in src/transfuse/assets/ (Fashion-MNIST CNN).

usage: python scripts/train_teacher.py [NAME]   (default: fashion_mnist_cnn)
"""
import json
import sys
from pathlib import Path

from transfuse.assets import HERE
from transfuse.recipes.builtin_teacher import train_builtin

if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "fashion_mnist_cnn"
    summary = train_builtin(name, HERE / f"{name}.safetensors")
    print(json.dumps(summary, indent=2))
