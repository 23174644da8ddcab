#!/usr/bin/env python3
"""Reference values of VQNN's layers from PyTorch (CPU, float32), for Tests/VQNNTests/Fixtures/layers.safetensors.

Run from the repository root with the reference virtualenv (Scripts/setup_reference.sh):
    $(Scripts/setup_reference.sh | tail -1) Scripts/make_layer_fixtures.py
For each case NAME: NAME.x (input), NAME.<param> (the layer's state before), NAME.y (output),
NAME.g (a fixed output gradient), NAME.grad.x and NAME.grad.<param> (gradients of sum(y * g)),
NAME.after.<buffer> (buffers after the forward, e.g. BatchNorm's running statistics).
The layer's constructor arguments are in the JSON beside the file (layers.json).
"""
import json, os, sys
import torch
from torch import nn
from safetensors.torch import save_file

torch.manual_seed(0)
torch.set_num_threads(1)
out_dir = os.path.join(os.path.dirname(__file__), '..', 'Tests', 'VQNNTests', 'Fixtures')
tensors, meta = {}, {}

def case(name, layer, x, kwargs, train=True, x_is_index=False):
    layer.train(train)
    for n, p in layer.named_parameters():
        tensors[f'{name}.{n}'] = p.detach().clone().contiguous()
    for n, b in layer.named_buffers():
        tensors[f'{name}.{n}'] = b.detach().clone().to(torch.float32).contiguous()
    if x_is_index:
        tensors[f'{name}.x'] = x.to(torch.int64).contiguous()
        y = layer(x)
    else:
        x = x.clone().requires_grad_()
        tensors[f'{name}.x'] = x.detach().clone().contiguous()
        y = layer(x)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    tensors[f'{name}.y'] = y.detach().contiguous()
    tensors[f'{name}.g'] = g.contiguous()
    if not x_is_index:
        tensors[f'{name}.grad.x'] = x.grad.detach().contiguous()
    for n, p in layer.named_parameters():
        tensors[f'{name}.grad.{n}'] = p.grad.detach().contiguous()
    for n, b in layer.named_buffers():
        tensors[f'{name}.after.{n}'] = b.detach().clone().to(torch.float32).contiguous()
    meta[name] = {'layer': type(layer).__name__, 'kwargs': kwargs, 'train': train}

r = lambda *s: torch.randn(*s)
case('conv2d', nn.Conv2d(3, 5, 3, stride=2, padding=1), r(2, 3, 7, 6), {'in': 3, 'out': 5, 'kernel': 3, 'stride': 2, 'padding': 1})
case('conv2d_groups_dil', nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2, bias=False), r(1, 4, 6, 6),
     {'in': 4, 'out': 6, 'kernel': 3, 'padding': 2, 'dilation': 2, 'groups': 2, 'bias': False})
case('conv1d', nn.Conv1d(4, 3, 5, stride=2, padding=2), r(2, 4, 11), {'in': 4, 'out': 3, 'kernel': 5, 'stride': 2, 'padding': 2})
case('conv_transpose2d', nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1), r(2, 4, 5, 4),
     {'in': 4, 'out': 3, 'kernel': 4, 'stride': 2, 'padding': 1})
case('conv_transpose2d_outpad_groups', nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), r(1, 4, 3, 3),
     {'in': 4, 'out': 6, 'kernel': 3, 'stride': 2, 'padding': 1, 'output_padding': 1, 'groups': 2})
case('conv_transpose1d', nn.ConvTranspose1d(3, 2, 3, stride=3, padding=0), r(2, 3, 5), {'in': 3, 'out': 2, 'kernel': 3, 'stride': 3})
case('maxpool2d', nn.MaxPool2d(2), r(2, 3, 6, 7), {'kernel': 2})
case('maxpool2d_pad', nn.MaxPool2d(3, stride=2, padding=1), r(1, 2, 7, 7), {'kernel': 3, 'stride': 2, 'padding': 1})
case('avgpool2d', nn.AvgPool2d(2), r(2, 3, 6, 6), {'kernel': 2})
case('avgpool2d_pad', nn.AvgPool2d(3, stride=2, padding=1), r(1, 2, 7, 6), {'kernel': 3, 'stride': 2, 'padding': 1})
case('upsample2d', nn.Upsample(scale_factor=2, mode='nearest'), r(2, 3, 3, 4), {'scale': 2})
case('upsample1d', nn.Upsample(scale_factor=3, mode='nearest'), r(2, 3, 4), {'scale': 3})
gn = nn.GroupNorm(2, 6); nn.init.normal_(gn.weight); nn.init.normal_(gn.bias)
case('groupnorm', gn, r(2, 6, 4, 3), {'groups': 2, 'channels': 6})
bn = nn.BatchNorm2d(4); nn.init.normal_(bn.weight); nn.init.normal_(bn.bias)
case('batchnorm2d_train', bn, r(3, 4, 5, 5) * 2 + 1, {'features': 4})
bn_eval = nn.BatchNorm1d(5); bn_eval.running_mean.normal_(); bn_eval.running_var.uniform_(0.5, 2); bn_eval.num_batches_tracked += 3
case('batchnorm1d_eval', bn_eval, r(4, 5), {'features': 5}, train=False)
case('embedding', nn.Embedding(10, 4), torch.tensor([[1, 3, 3], [9, 0, 2]]), {'num': 10, 'dim': 4}, x_is_index=True)
case('gelu', nn.GELU(), r(3, 5), {})
case('silu', nn.SiLU(), r(3, 5), {})

os.makedirs(out_dir, exist_ok=True)
save_file(tensors, os.path.join(out_dir, 'layers.safetensors'))
with open(os.path.join(out_dir, 'layers.json'), 'w') as f:
    json.dump({'torch': torch.__version__, 'cases': meta}, f, indent=1, sort_keys=True)
print(f'{len(meta)} cases, {len(tensors)} tensors')
