"""Image encoders, x [B, C, H, W] -> embeddings [B, D], one module per `encoder` option, each registering its
config dataclass where it is defined (`fewshot_exp.plugins.register`): `conv4`, `resnet12`, `torchvision`. Beside
them, the CPU kernels they train with (`norm_pool`: Conv-4's fused batch norm, max-pool and ReLU;
`task_batch_norm`: batch norm with a short double backward for second-order MAML), the schema they extend
(`base`) and `pretrained`, which starts an encoder from another run's weights (`train.init_from`)."""
