#!/usr/bin/python3
"""bench_models_torch.py MODEL STEPS CHUNKS THREADS -- PyTorch's side of
`make bench-peer`: the benchmark models of DESIGN.md (B1 vae, B2 dcgan, B3 cnn,
B4 gan2d) step for step as scripts/bench_models.lua builds them in ember, on
synthetic data of the same shapes, timed the same way.

Prints one line: `MODEL ms_per_step_median chunk1 chunk2 ...`.
`bench_models_torch.py --kernels` prints instead the kernels PyTorch's matrix
and convolution work runs on here: its BLAS library (with OpenBLAS's kernel
name when that is the one loaded) and its oneDNN (mkldnn) state.
Debian's python3-torch; a benchmark peer only (never a test or run dependency).
"""
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def vae():
    enc = nn.Sequential(nn.Linear(784, 400), nn.ReLU())
    mu_head, lv_head = nn.Linear(400, 20), nn.Linear(400, 20)
    dec = nn.Sequential(nn.Linear(20, 400), nn.ReLU(), nn.Linear(400, 784))
    params = [p for m in (enc, mu_head, lv_head, dec) for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    B = 128
    x = torch.rand(B, 784)

    def step():
        opt.zero_grad()
        h = enc(x)
        mu, logvar = mu_head(h), lv_head(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        rec = F.binary_cross_entropy_with_logits(dec(z), x, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu * mu - torch.exp(logvar))
        loss = (rec + kl) / B
        loss.backward()
        opt.step()
    return step


def dcgan():
    G = nn.Sequential(
        nn.ConvTranspose2d(100, 256, 7, 1, 0), nn.BatchNorm2d(256), nn.ReLU(),
        nn.ConvTranspose2d(256, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.ConvTranspose2d(128, 1, 4, 2, 1), nn.Tanh())
    D = nn.Sequential(
        nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
        nn.Conv2d(128, 1, 7, 1, 0))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    B = 64
    real = torch.rand(B, 1, 28, 28) * 2 - 1
    ones, zeros = torch.ones(B), torch.zeros(B)
    bce = F.binary_cross_entropy_with_logits

    def step():
        fake = G(torch.randn(B, 100, 1, 1))
        opt_d.zero_grad()
        d_loss = bce(D(real).view(-1), ones) + bce(D(fake.detach()).view(-1), zeros)
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad()
        g_loss = bce(D(fake).view(-1), ones)
        g_loss.backward()
        opt_g.step()
    return step


def cnn():
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    B = 128
    x = torch.rand(B, 1, 28, 28)
    y = torch.randint(0, 10, (B,))

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    return step


def gan2d():
    G = nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2))
    D = nn.Sequential(nn.Linear(2, 128), nn.ReLU(), nn.Linear(128, 1))
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.5, 0.999))
    B = 512
    real = torch.randn(B, 2)
    ones, zeros = torch.ones(B), torch.zeros(B)
    bce = F.binary_cross_entropy_with_logits

    def step():
        with torch.no_grad():
            fake = G(torch.randn(B, 256))
        opt_d.zero_grad()
        d_loss = bce(D(real).view(-1), ones) + bce(D(fake).view(-1), zeros)
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad()
        g_loss = bce(D(G(torch.randn(B, 256))).view(-1), ones)
        g_loss.backward()
        opt_g.step()
    return step


def kernels():
    """The BLAS PyTorch loaded (from this process's memory map) and OpenBLAS's kernel name."""
    import ctypes
    torch.ones(2, 2) @ torch.ones(2, 2)  # the BLAS is loaded by now
    libs = sorted({line.split()[-1] for line in open("/proc/self/maps")
                   if "blas" in line.split()[-1] and ".so" in line})
    core = "?"
    for lib in libs:
        try:
            fn = ctypes.CDLL(lib).openblas_get_corename
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_char_p
        core = fn().decode()
    # oneDNN says which instruction set and convolution kernel it runs when verbose
    # (a child process: the verbose lines go to its stdout)
    import subprocess
    conv = ("import torch\nwith torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):\n"
            "    torch.nn.functional.conv2d(torch.ones(8, 32, 14, 14), torch.ones(64, 32, 3, 3), padding=1)\n")
    out = subprocess.run([sys.executable, "-c", conv], capture_output=True, text=True).stdout.splitlines()
    isa = [ln.split("isa:")[1] for ln in out if ",isa:" in ln]
    impl = [ln.split(",")[4] for ln in out if ",exec,cpu,convolution," in ln]
    print("PyTorch %s: BLAS %s (OpenBLAS kernel %s); convolutions: oneDNN %s, kernel %s (%s)" % (
        torch.__version__, " ".join(os.path.basename(lib) for lib in libs) or "(none loaded)", core,
        "on" if torch.backends.mkldnn.is_available() else "off", impl[0] if impl else "?",
        isa[0] if isa else "?"))


def main():
    if sys.argv[1:] == ["--kernels"]:
        kernels()
        return
    model, steps, chunks, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    builders = {"vae": vae, "dcgan": dcgan, "cnn": cnn, "gan2d": gan2d}
    if model not in builders:
        sys.exit("bench_models_torch: unknown model %s (vae, dcgan, cnn, gan2d)" % model)
    step = builders[model]()
    for _ in range(max(3, steps // 10)):
        step()
    per = max(1, steps // chunks)
    samples = []
    for _ in range(chunks):
        t0 = time.perf_counter()
        for _ in range(per):
            step()
        samples.append((time.perf_counter() - t0) * 1000 / per)
    s = sorted(samples)
    n = len(s)
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    print("%s %.3f %s" % (model, med, " ".join("%.3f" % v for v in samples)))


if __name__ == "__main__":
    main()
