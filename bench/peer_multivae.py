"""The paper step of this code against the MMVAE of MultiVae (the peer library: Senellart et al.,
github.com/AgatheSenellart/MultiVae), on the same networks and batches, each as its users run it.

    pip install multivae==1.0.3        # not a dependency of this project: a separate environment is best
    python bench/peer_multivae.py --offline --threads 2 --steps 10

The step: mnist_svhn, dreg with --looser, K = 30, a learnt prior, batch 128 (the paper's). Both start
from the same weights (the released MNIST and SVHN networks, built here, copied into MultiVae's
encoders and decoders) and train on the same batches, alternating step by step:
- this code: main.py's training step (src/train.py: objective, backward, Adam), its defaults (float32,
  subnormals flushed and freed memory kept on the CPU);
- MultiVae: `MMVAE(MMVAEConfig(loss='dreg_looser', K=30, learn_prior=True, laplace_with_softmax,
  Laplace decoders of scale 0.75, MNIST likelihood x 3072/784))`, its encoders and decoders the released
  networks written plainly (the SVHN decoder as the released nn.Sequential), the batch as its
  MultimodalBaseDataset, `model(batch).loss.backward()` and Adam: what its trainer does per step, with
  torch's and glibc's defaults (IEEE subnormals, freed memory returned).
Both estimators are the released dreg's (MultiVae's hook does fire, so its encoder gradient carries
the extra w~: the losses, not the gradients, are the same quantity). Printed: wall and CPU time per
step, the first steps and the steady state (the median after --warmup), and the ratio.
"""
import argparse
import copy
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from src.cli import parse_args  # noqa: E402
from src.data import BatchLoader, load_data  # noqa: E402
from src.files import save_json  # noqa: E402
from src.models import MODELS  # noqa: E402
from src.numerics import cpu_denormals, host_memory  # noqa: E402
from src.train import build_objectives, build_optimizer, training_numerics  # noqa: E402

PAPER = ['--model', 'mnist_svhn', '--obj', 'dreg', '--K', '30', '--looser', '--learn-prior', '--batch-size', '128']


def multivae_model(ours, K):
    """MultiVae's MMVAE with copies of our released networks (same initial weights)."""
    from multivae.models import MMVAE, MMVAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn.base_architectures import BaseDecoder, BaseEncoder

    class MnistEncoder(BaseEncoder):
        def __init__(self, enc):
            super().__init__()
            self.net = copy.deepcopy(enc)

        def forward(self, x):
            e = self.net.enc(x.reshape(len(x), -1))
            return ModelOutput(embedding=self.net.fc21(e), log_covariance=self.net.fc22(e))

    class SvhnEncoder(BaseEncoder):
        def __init__(self, enc):
            super().__init__()
            self.net = copy.deepcopy(enc)

        def forward(self, x):
            e = self.net.enc(x)
            return ModelOutput(embedding=self.net.c1(e).flatten(1), log_covariance=self.net.c2(e).flatten(1))

    class MnistDecoder(BaseDecoder):
        def __init__(self, dec):
            super().__init__()
            self.net = copy.deepcopy(dec)

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z)[0])

    class SvhnDecoder(BaseDecoder):  # the released nn.Sequential on z viewed as (N, D, 1, 1)
        def __init__(self, dec):
            super().__init__()
            self.dec = copy.deepcopy(dec.dec)

        def forward(self, z):
            return ModelOutput(reconstruction=self.dec(z.view(*z.shape, 1, 1)))

    m, s = ours.vaes
    cfg = MMVAEConfig(n_modalities=2, latent_dim=m.params.latent_dim,
                      input_dims={'mnist': (1, 28, 28), 'svhn': (3, 32, 32)}, K=K, loss='dreg_looser',
                      prior_and_posterior_dist='laplace_with_softmax', learn_prior=True,
                      decoders_dist={'mnist': 'laplace', 'svhn': 'laplace'},
                      decoder_dist_params={'mnist': {'scale': 0.75}, 'svhn': {'scale': 0.75}},
                      uses_likelihood_rescaling=True, rescale_factors={'mnist': 3 * 32 * 32 / 784, 'svhn': 1.0})
    return MMVAE(cfg, encoders={'mnist': MnistEncoder(m.enc), 'svhn': SvhnEncoder(s.enc)},
                 decoders={'mnist': MnistDecoder(m.dec), 'svhn': SvhnDecoder(s.dec)})


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    loss = fn()
    return loss, 1e3 * (time.perf_counter() - w), 1e3 * (time.process_time() - c)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--offline', action='store_true')
    p.add_argument('--data-dir', default='data')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--steps', type=int, default=10, help='timed steps of each, alternating')
    p.add_argument('--warmup', type=int, default=2, help='first steps reported apart from the steady state')
    p.add_argument('--return-host-memory', action='store_true',
                   help="this code's steps with glibc's malloc behaviour too (by default this code keeps freed "
                        "memory, and MultiVae's steps, alternating, reuse it: faster than in a process of their own)")
    p.add_argument('--json', default='')
    a = p.parse_args(argv)
    try:
        import multivae
    except ImportError:
        sys.exit('error: MultiVae is not installed.\n  fix: pip install multivae==1.0.3 (best in a separate '
                 'environment: it is not a dependency of this project)')
    torch.set_num_threads(a.threads)
    device = torch.device('cpu')
    args = parse_args([*PAPER, '--data-dir', a.data_dir] + (['--offline'] if a.offline else []))
    torch.manual_seed(0)
    ours = MODELS['mnist_svhn'](args)
    peer = multivae_model(ours, args.K)
    from multivae.data.datasets.base import MultimodalBaseDataset
    objective, _ = build_objectives(args, ours, device)
    opt_ours, opt_peer = build_optimizer(args, ours), torch.optim.Adam(peer.parameters(), lr=args.lr)
    data = load_data('mnist_svhn', args, 'train')
    batches = iter(BatchLoader(data, args.batch_size, shuffle=True))

    def step_ours(x):
        with training_numerics(device, return_host_memory=a.return_host_memory):
            opt_ours.zero_grad(set_to_none=True)
            loss = -objective(ours, x, args.K)
            loss.backward()
            opt_ours.step()
            return loss.item() / len(x[0])

    def step_peer(x):  # as MultiVae's users run it: IEEE subnormals, glibc's malloc as it comes
        with cpu_denormals(ieee=True), host_memory(keep=False):
            opt_peer.zero_grad(set_to_none=True)
            out = peer(MultimodalBaseDataset(data={'mnist': x[0], 'svhn': x[1]}))
            out.loss.backward()
            opt_peer.step()
            return out.loss.item() / len(x[0])

    rows = {'ours': [], 'multivae': []}
    for i in range(a.steps + a.warmup):
        x, _ = next(batches)
        for name, fn in (('ours', step_ours), ('multivae', step_peer)):
            loss, wall, cpu = timed(lambda fn=fn, x=x: fn(x))
            rows[name].append({'loss_per_item': loss, 'wall_ms': wall, 'cpu_ms': cpu})
        print(f"step {i + 1}: this code {rows['ours'][-1]['wall_ms']:,.0f} ms, MultiVae "
              f"{rows['multivae'][-1]['wall_ms']:,.0f} ms (loss/item {rows['ours'][-1]['loss_per_item']:.1f} / "
              f"{rows['multivae'][-1]['loss_per_item']:.1f})", flush=True)
    out = summary(rows, a, multivae.__version__ if hasattr(multivae, '__version__') else '1.0.3')
    if a.json:
        save_json(out, a.json)


def summary(rows, a, version):
    med = {n: {k: statistics.median(r[k] for r in rs[a.warmup:]) for k in ('wall_ms', 'cpu_ms')}
           for n, rs in rows.items()}
    first = {n: [round(r['wall_ms']) for r in rs[:a.warmup]] for n, rs in rows.items()}
    print(f"\npaper step (mnist_svhn dreg K=30 --looser, batch 128), {a.threads} threads, median of {a.steps} "
          f"steps after {a.warmup}:")
    print(f"  this code  {med['ours']['wall_ms']:8,.0f} ms wall, {med['ours']['cpu_ms']:8,.0f} ms CPU "
          f"(first steps {first['ours']})")
    print(f"  MultiVae   {med['multivae']['wall_ms']:8,.0f} ms wall, {med['multivae']['cpu_ms']:8,.0f} ms CPU "
          f"(first steps {first['multivae']})")
    ratio = {k: med['multivae'][k] / med['ours'][k] for k in ('wall_ms', 'cpu_ms')}
    print(f"  MultiVae / this code: {ratio['wall_ms']:.2f}x wall, {ratio['cpu_ms']:.2f}x CPU time")
    with open('/proc/cpuinfo') as f:
        cpu = next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')), 'CPU')
    return {'cpu': cpu, 'threads': a.threads, 'load_average': os.getloadavg(), 'date': time.strftime('%Y-%m-%d'),
            'return_host_memory': a.return_host_memory,
            'multivae_version': version, 'steps': rows, 'median': med, 'first_steps_wall_ms': first,
            'ratio': ratio, 'command': sys.argv}


if __name__ == '__main__':
    main()
