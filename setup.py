from setuptools import find_packages, setup

setup(
    name="rporec-recbole",
    version="0.1.0",
    description="RPORec (reasoning-augmented recommendation with GRPO) as a RecBole plugin",
    packages=find_packages(include=["rporec_recbole", "rporec_recbole.*"]) + ["rporec_recbole.properties"],
    # the plugin's default yamls live in properties/ (RecBole-plugin layout); a wheel carries them inside the
    # package, where rporec_recbole/config.py looks first
    package_dir={"rporec_recbole.properties": "properties"},
    package_data={"rporec_recbole.properties": ["*.yaml", "dataset/*.yaml"]},
    python_requires=">=3.10,<3.13",
    install_requires=[
        "recbole==1.2.1",
        "torch>=2.1,<2.15",
        "transformers>=4.56,<6",
        "peft>=0.13",
        "accelerate>=1.0",
        "safetensors>=0.4",
        "gguf>=0.10",
        "pyyaml>=6",
        "scipy>=1.10",
        "numpy>=1.24",
        "pandas>=2.0,<3",  # RecBole 1.2.1 breaks on pandas 3 (token_seq remapping)
        "tqdm",
        "tensorboard>=2.10",
        "matplotlib>=3.7",
    ],
    extras_require={"test": ["pytest>=7", "setuptools"]},  # setuptools: tests/test_packaging.py builds the package
)
