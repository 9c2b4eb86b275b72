"""Train and evaluate RPORec or any RecBole model on a RecBole dataset.

    python run_recbole_rporec.py --model=RPORec --dataset=ml-100k
    python run_recbole_rporec.py --model=SASRec --dataset=ml-100k --epochs=50
Any other ``--key=value`` overrides a config key, as with RecBole's own runner.
"""
import argparse
import sys

from rporec_recbole.atomic_files import DatasetFormatError
from rporec_recbole.llm import LLMNotFoundError
from rporec_recbole.quick_start import DatasetNotFoundError, run_recbole_rporec
from rporec_recbole.text_embedder import TextEmbedderNotFoundError
from rporec_recbole.validation import ConfigValueError


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default="RPORec", help="RPORec or any RecBole model name")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="RecBole dataset name")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    args, _ = parser.parse_known_args()  # the remaining --key=value pairs are read by RecBole's Config
    config_files = args.config_files.strip().split(" ") if args.config_files else None
    try:
        run_recbole_rporec(model=args.model, dataset=args.dataset, config_file_list=config_files)
    except (DatasetNotFoundError, DatasetFormatError, LLMNotFoundError, TextEmbedderNotFoundError,
            ConfigValueError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
