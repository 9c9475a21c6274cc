#!/usr/bin/env python3
"""tools/train/wan_models.py against the official code's fixtures (tests/data/wan): rel L2 per output."""
import os
import json, torch, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors import safe_open
from safetensors.torch import load_file
from wan_models import *
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'tests', 'data', 'wan')
def rel(a,b): return ((a-b).norm()/b.norm()).item()
def load(f):
    d=load_file(f); meta=json.loads(safe_open(f,'pt').metadata()['config']); return d,meta
d,m=load(os.path.join(DATA, 'dit_t2v_tiny.safetensors'))
c=m['constructor']; print(c)
model=WanModel(dim=c['dim'],ffn_dim=c['ffn_dim'],freq_dim=c['freq_dim'],in_dim=c['in_dim'],out_dim=c['out_dim'],num_heads=c['num_heads'],num_layers=c['num_layers'],text_len=c['text_len'],text_dim=c['text_dim'])
sd={k[6:]:v for k,v in d.items() if k.startswith('model.')}
print(model.load_state_dict(sd, strict=True))
ctx=d['input.context']; ctx=torch.cat([ctx, ctx.new_zeros(c['text_len']-ctx.size(0), ctx.size(1))])[None]
got={}
out=model(d['input.x'][None], d['input.t'], ctx, hook=lambda n,v: got.__setitem__(n,v[0]))
got['out']=out[0]
for k in d:
    if k.startswith('expected.'): print(k, rel(got[k[9:]].reshape(d[k].shape), d[k]))
d,m=load(os.path.join(DATA, 't5_tiny.safetensors')); print(m['constructor']); print([k for k in d if not k.startswith('model.')])
c=m['constructor']
t5=T5Encoder(vocab=c['vocab'],dim=c['dim'],dim_attn=c['dim_attn'],dim_ffn=c['dim_ffn'],num_heads=c['num_heads'],num_layers=c['num_layers'],num_buckets=c['num_buckets'])
print(t5.load_state_dict({k[6:]:v for k,v in d.items() if k.startswith('model.')}))
ids=d['input.ids'].long(); mask=d['input.mask'].long()
print(ids.shape, mask.shape, d['expected.out'].shape)
if ids.dim()==1: ids=ids[None]; mask=mask[None]
o=t5(ids,mask)
print('t5 out', rel(o.reshape(d['expected.out'].shape), d['expected.out']))
d,m=load(os.path.join(DATA, 'vae21_tiny.safetensors')); c=m['constructor']; print(c, [ (k,d[k].shape) for k in d if not k.startswith('model.')])
vae=WanVAE(dim=c['dim'],z_dim=c['z_dim'],dim_mult=c['dim_mult'],num_res_blocks=c['num_res_blocks'],temperal_downsample=c['temperal_downsample'])
print(vae.load_state_dict({k[6:]:v for k,v in d.items() if k.startswith('model.')}))
print(m.get('description'))
mean, std = d['input.scale_mean'].view(1,-1,1,1,1), d['input.scale_std'].view(1,-1,1,1,1)
with torch.no_grad():
    print('enc_raw', rel(vae.encoder(d['input.video']), d['expected.enc_raw']))
    mu,_=vae.encode(d['input.video']); print('mu', rel((mu-mean)/std, d['expected.mu']))
    zr = d['input.z']*std+mean
    print('dec', rel(vae.decode(zr), d['expected.decoded']))
    mu,_=vae.encode(d['input.image']); print('mu_img', rel((mu-mean)/std, d['expected.mu_image']))
