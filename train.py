"""Train a CLIP model: python train.py fit --config conf/quickstart.yaml"""

from lightning_clip.cli import cli_main, run_or_exit

if __name__ == "__main__":
    run_or_exit(cli_main)
