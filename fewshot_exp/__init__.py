"""fewshot-exp: a Hydra-configured experiment runner for few-shot learning research."""
