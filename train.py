"""Train a CLIP model: python train.py fit --config conf/quickstart.yaml"""

from lightning_clip.cli import cli_main

if __name__ == "__main__":
    cli_main()
