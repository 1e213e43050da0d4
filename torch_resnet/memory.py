"""Training memory of the ResNet on paper: the bytes autograd saves for backward, counted on the meta
device (shapes only: no memory, no compute, so the seed at 192^3 is planned on any laptop).

Without checkpointing the saved tensors of one forward pass are the activation memory. With the model's
two-level checkpointing, forward keeps only the checkpoint inputs; backward then recomputes one block at a
time, so the peak adds the largest block's saved tensors (and its input) to what forward kept.
"""

from __future__ import annotations

import torch

from common.bench.capacity import MemoryPlan, plan_batches, training_state_bytes
from torch_resnet.config import ResNetConfig
from torch_resnet.model import ResBlock, build_resnet, count_parameters


def saved_tensor_bytes(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd saves for backward during `module(x)`, parameters excluded
    (they are counted once in the fixed memory). A tensor saved by several ops is counted once."""
    parameters = {id(p.untyped_storage()) for p in module.parameters()} if x.device.type == "meta" else \
        {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = id(storage) if tensor.device.type == "meta" else storage.data_ptr()
        if key not in parameters:
            seen[key] = max(seen.get(key, 0), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        module(x)
    return sum(seen.values())


def activation_bytes(config: ResNetConfig, *, checkpointing: bool = False, device: str = "meta") -> int:
    """Activation memory of one training sample (fp32): saved tensors of a forward pass in train mode."""
    with torch.device(device):
        net = build_resnet(config, activation_checkpointing=checkpointing).train()
        for p in net.parameters():
            p.requires_grad_(True)
        x = torch.zeros(1, config.in_channels, *config.input_shape)
    if not checkpointing:
        return saved_tensor_bytes(net, x)
    block_inputs: list[tuple[ResBlock, tuple[int, ...]]] = []
    hooks = [block.register_forward_pre_hook(lambda m, args: block_inputs.append((m, tuple(args[0].shape))))
             for block in net.modules() if isinstance(block, ResBlock)]
    kept = saved_tensor_bytes(net, x)  # the checkpoint inputs only (the blocks run without saving)
    for hook in hooks:
        hook.remove()
    recompute = 0
    for block, shape in block_inputs:
        with torch.device(device):
            block_x = torch.zeros(shape)
        recompute = max(recompute, saved_tensor_bytes(block, block_x) + block_x.numel() * block_x.element_size())
    return kept + recompute


def memory_plan(config: ResNetConfig) -> MemoryPlan:
    """fp32 training memory of `config` and the batch each planned GPU size allows."""
    parameters = count_parameters(build_resnet(config).to("meta"))
    plan = MemoryPlan(model="torch_resnet", input_shape=config.input_shape, precision="fp32",
                      fixed_bytes=training_state_bytes(parameters), activation_bytes=activation_bytes(config),
                      checkpointed_bytes=activation_bytes(config, checkpointing=True),
                      method="autograd saved-tensor hooks on the meta device (torch.autograd.graph.saved_tensors_hooks)")
    return plan_batches(plan)
