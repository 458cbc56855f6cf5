"""fewshot-exp: a Hydra-configured experiment runner for few-shot learning research."""

from fewshot_exp.allocator import use_huge_pages

use_huge_pages()  # before torch is imported (python -m fewshot_exp imports this package first): see allocator.py
