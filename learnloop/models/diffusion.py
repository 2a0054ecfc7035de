"""Gaussian diffusion: the forward process, its noise schedules, prediction targets, and the DDPM and DDIM
samplers over (sub-)sequences of timesteps.

Forward process (Ho, Jain & Abbeel, 2020, "DDPM"), t = 0..T-1 here (t = 1..T in the paper):

    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),   abar_t = prod_{s<=t} (1 - beta_s)           (eq. 4)
    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,  eps ~ N(0, I)                              (`q_sample`)
    q(x_{t-1} | x_t, x_0) = N(c1_t x_0 + c2_t x_t, beta~_t I),  abar_{-1} = 1                       (eq. 6-7)
        c1_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t),  c2_t = sqrt(1 - beta_t) (1 - abar_{t-1}) / (1 - abar_t)
        beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t                                 (posterior variance)
    beta~_0 = 0, so its log is clipped as in Ho et al.'s code: log beta~ with beta~_0 replaced by beta~_1.

Schedules: "linear" beta_t from 1e-4 to 0.02 over T = 1000 (Ho et al., sec. 4); "cosine" (Nichol & Dhariwal,
2021, eq. 17): abar(t) = f(t) / f(0), f(t) = cos^2(((t / T + s) / (1 + s)) pi / 2), s = 0.008, and
beta_t = min(1 - abar(t + 1) / abar(t), 0.999) (so T = 1000 clips only the last beta). Tables are float64.

Prediction targets: eps (Ho et al., eq. 14) or v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho,
2022, sec. 4), with x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v and eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v.

Sampling visits S timesteps tau_1 > ... > tau_S chosen by `sampling_timesteps` ("leading", "trailing",
"linspace" as in Lin et al., 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Table 2,
and the diffusers schedulers), each step going from tau_i to tau_{i+1} (the last to x_0, abar = 1). The
model's output gives x0_hat (clipped to [-1, 1] when `clip`) and eps_hat = (x_t - sqrt(abar) x0_hat) /
sqrt(1 - abar). With abar, abar' the values at tau_i and tau_{i+1} and b = 1 - abar / abar':
- "ddpm", ancestral sampling (Ho et al., Algorithm 2; over a sub-sequence the respaced process of Nichol &
  Dhariwal, 2021, sec. 4, whose betas are b): x' = c1 x0_hat + c2 x_t + sigma z with sigma^2 = beta~ (the
  posterior variance, "beta_tilde") or b ("beta"), and no noise at the last step;
- "ddim" (Song, Meng & Ermon, 2021, eq. 12 and 16): x' = sqrt(abar') x0_hat + sqrt(1 - abar' - sigma^2) eps_hat
  + sigma z, sigma = eta sqrt((1 - abar') / (1 - abar)) sqrt(b). eta = 1 gives sigma^2 = beta~ and the same
  mean as ddpm: DDIM with eta = 1 is DDPM ancestral sampling with the posterior variance.
Both draw x_T and then each step's z (none when sigma = 0) from one `torch.Generator`, in that order, so a
seed fixes the samples (for a given shape) and ddpm with "beta_tilde" and ddim with eta = 1 draw the same
numbers. diffusers' DDIM steps from t to t - T // S rather than to the next listed timestep; the two agree
for "leading" and "trailing" when S divides T.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from learnloop.errors import UserError

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v")
SAMPLERS = ("ddpm", "ddim")
SPACINGS = ("leading", "trailing", "linspace")
VARIANCES = ("beta_tilde", "beta")


# --- schedules ---------------------------------------------------------------------------------------------
def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Ho et al. (2020): beta_t evenly spaced from beta_start to beta_end (float64)."""
    _check_T(T)
    if not 0 < beta_start <= beta_end < 1:
        raise UserError(f"need 0 < beta_start <= beta_end < 1, got {beta_start} and {beta_end}")
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal (2021, eq. 17): beta_t = min(1 - abar((t+1)/T) / abar(t/T), max_beta) (float64)."""
    _check_T(T)
    if not s > 0 or not 0 < max_beta < 1:
        raise UserError(f"need s > 0 and 0 < max_beta < 1, got s={s}, max_beta={max_beta}")
    u = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def make_betas(schedule: str, T: int = 1000, *, beta_start: float = 1e-4, beta_end: float = 0.02,
               s: float = 0.008) -> torch.Tensor:
    if schedule == "linear":
        return linear_betas(T, beta_start, beta_end)
    if schedule == "cosine":
        return cosine_betas(T, s)
    raise UserError(f"unknown beta schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")


def _check_T(T) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise UserError(f"the number of diffusion steps T must be a positive int, got {T!r}")


# --- the forward process ----------------------------------------------------------------------------------
class Diffusion:
    """The float64 tables of a forward process with `betas` (index t = 0..T-1), and what is computed from
    them: q_sample, targets and their inversions, SNR. `respaced(timesteps)` is the process that visits only
    those timesteps (Nichol & Dhariwal, 2021, sec. 4), with its own betas 1 - abar_t / abar_prev."""

    def __init__(self, betas: torch.Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or len(betas) < 1 or not bool(((betas > 0) & (betas < 1)).all()):
            raise UserError("betas must be a non-empty 1-D sequence of values in (0, 1)")
        self.betas = betas
        self.alphas = 1 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        abar, prev = self.alphas_cumprod, self.alphas_cumprod_prev
        self.posterior_variance = betas * (1 - prev) / (1 - abar)
        first = self.posterior_variance[1:2] if len(betas) > 1 else betas[:1]
        self.posterior_log_variance_clipped = torch.log(torch.cat([first, self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = betas * prev.sqrt() / (1 - abar)
        self.posterior_mean_coef2 = (1 - prev) * self.alphas.sqrt() / (1 - abar)

    @classmethod
    def from_schedule(cls, schedule: str = "linear", T: int = 1000, **options) -> "Diffusion":
        return cls(make_betas(schedule, T, **options))

    @property
    def T(self) -> int:
        return len(self.betas)

    def respaced(self, timesteps) -> "Diffusion":
        """The process over `timesteps` (any order, distinct, within 0..T-1), indexed in ascending order."""
        ts = sorted(int(t) for t in timesteps)
        if not ts or len(set(ts)) != len(ts) or ts[0] < 0 or ts[-1] >= self.T:
            raise UserError(f"respaced timesteps must be distinct and within 0..{self.T - 1}")
        abar = self.alphas_cumprod[ts]
        prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        return Diffusion(1 - abar / prev)

    def _at(self, table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """table[t] shaped (B, 1, ..., 1) to broadcast against `like`, in its dtype and device."""
        t = torch.as_tensor(t, device=table.device).long()
        if t.dim() == 0:
            t = t.expand(len(like))
        if int(t.min()) < 0 or int(t.max()) >= self.T:
            raise UserError(f"timesteps must lie in 0..{self.T - 1}, got {int(t.min())}..{int(t.max())}")
        return table[t].to(like.device, like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (eq. 4)."""
        abar = self._at(self.alphas_cumprod, t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """SNR(t) = abar_t / (1 - abar_t), float64."""
        abar = self.alphas_cumprod[torch.as_tensor(t).long().cpu()]
        return abar / (1 - abar)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, prediction: str = "eps") -> torch.Tensor:
        """What the network learns to output: eps, or v = sqrt(abar) eps - sqrt(1 - abar) x_0."""
        check_prediction(prediction)
        if prediction == "eps":
            return noise
        abar = self._at(self.alphas_cumprod, t, x0)
        return abar.sqrt() * noise - (1 - abar).sqrt() * x0

    def split(self, x_t: torch.Tensor, t: torch.Tensor, output: torch.Tensor, prediction: str = "eps"
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat, eps_hat) from the network's output at x_t."""
        check_prediction(prediction)
        abar = self._at(self.alphas_cumprod, t, x_t)
        a, s = abar.sqrt(), (1 - abar).sqrt()
        if prediction == "eps":
            return (x_t - s * output) / a, output
        return a * x_t - s * output, s * x_t + a * output


def check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise UserError(f"unknown prediction {prediction!r}; choose from {', '.join(PREDICTIONS)}")


# --- which timesteps a sampler visits -----------------------------------------------------------------------
def _round_half_even(x: Fraction) -> int:
    return round(x)         # Python rounds a Fraction exactly, ties to even, as numpy's round does


def sampling_timesteps(T: int, steps: int, spacing: str = "leading", steps_offset: int = 0) -> list[int]:
    """The S = `steps` timesteps tau_1 > ... > tau_S a sampler visits (Lin et al., 2024, Table 2; diffusers):

        leading:   k * (T // S) + steps_offset,          k = S-1, ..., 0
        trailing:  round(T - k * T / S) - 1,             k = 0, ..., S-1   (always starts at T - 1)
        linspace:  round(k * (T - 1) / (S - 1)),         k = S-1, ..., 0   (S = 1: [T - 1], where
                                                     numpy's linspace, so diffusers, gives [0])

    computed exactly (ties to even, as numpy rounds): diffusers' float `arange` can land one off at exact ties
    and, for some S, returns an extra timestep -1 under "trailing"."""
    _check_T(T)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise UserError(f"sampling steps must be an int in 1..T={T}, got {steps!r}")
    if spacing not in SPACINGS:
        raise UserError(f"unknown timestep spacing {spacing!r}; choose from {', '.join(SPACINGS)}")
    if steps_offset and spacing != "leading":
        raise UserError(f"steps_offset applies to leading spacing only, got {steps_offset} with {spacing}")
    if spacing == "leading":
        ts = [k * (T // steps) + steps_offset for k in reversed(range(steps))]
        if ts[0] > T - 1 or steps_offset < 0:
            raise UserError(f"steps_offset {steps_offset} puts a timestep outside 0..{T - 1}")
    elif spacing == "trailing":
        ts = [_round_half_even(Fraction(T * (steps - k), steps)) - 1 for k in range(steps)]
    else:
        ts = [T - 1] if steps == 1 else \
            [_round_half_even(Fraction(k * (T - 1), steps - 1)) for k in reversed(range(steps))]
    return ts


def ddim_sigma(abar: float, abar_prev: float, eta: float) -> float:
    """Song et al. (2021, eq. 16): eta sqrt((1 - abar_prev) / (1 - abar)) sqrt(1 - abar / abar_prev)."""
    return eta * math.sqrt((1 - abar_prev) / (1 - abar)) * math.sqrt(1 - abar / abar_prev)


# --- samplers ------------------------------------------------------------------------------------------------
@torch.no_grad()
def sample(model, diffusion: Diffusion, shape, *, sampler: str = "ddim", steps: int | None = None,
           eta: float = 0.0, spacing: str = "trailing", steps_offset: int = 0, variance: str = "beta_tilde",
           prediction: str = "eps", clip: bool = True, generator: torch.Generator | None = None,
           device=None, model_kwargs: dict | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """x_0 samples of `shape` (B, C, H, W) from `model(x_t, t, **model_kwargs)` (t a (B,) long tensor of
    original timesteps) by `sampler` "ddpm" or "ddim" over `steps` timesteps (None: all T) chosen by
    `spacing` (see the module docstring). `noise` replaces x_T ~ N(0, I). Returns float32 on the model's
    `device` (default CPU); the random numbers come from `generator` (CPU)."""
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    if variance not in VARIANCES:
        raise UserError(f"unknown DDPM variance {variance!r}; choose from {', '.join(VARIANCES)}")
    if not (isinstance(eta, (int, float)) and 0 <= eta <= 1):
        raise UserError(f"DDIM eta must be in [0, 1], got {eta!r}")
    check_prediction(prediction)
    ts = sampling_timesteps(diffusion.T, diffusion.T if steps is None else steps, spacing, steps_offset)
    proc = diffusion.respaced(ts)                 # index i <-> timestep ts[S - 1 - i]
    abar_all = diffusion.alphas_cumprod
    x = torch.randn(*shape, generator=generator) if noise is None else noise.detach().float().cpu().clone()
    x = x.to(device or "cpu")
    kwargs = model_kwargs or {}
    S = len(ts)
    for n, t in enumerate(ts):
        i = S - 1 - n
        t_batch = torch.full((len(x),), t, dtype=torch.long, device=x.device)
        out = model(x, t_batch, **kwargs).float()
        abar = float(abar_all[t])
        abar_prev = float(proc.alphas_cumprod_prev[i])
        a, s = math.sqrt(abar), math.sqrt(1 - abar)
        if prediction == "eps":
            x0, eps = (x - s * out) / a, out
        else:
            x0, eps = a * x - s * out, s * x + a * out
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (x - a * x0) / s
        if sampler == "ddpm":
            mean = float(proc.posterior_mean_coef1[i]) * x0 + float(proc.posterior_mean_coef2[i]) * x
            if i == 0:
                sigma = 0.0                       # no noise at the last step (Ho et al., Algorithm 2)
            elif variance == "beta_tilde":
                sigma = math.exp(0.5 * float(proc.posterior_log_variance_clipped[i]))
            else:
                sigma = math.sqrt(float(proc.betas[i]))
        else:
            sigma = ddim_sigma(abar, abar_prev, eta) if i > 0 else 0.0
            mean = math.sqrt(abar_prev) * x0 + math.sqrt(max(1 - abar_prev - sigma ** 2, 0.0)) * eps
        if sigma > 0:
            z = torch.randn(*x.shape, generator=generator).to(x.device)
            x = mean + sigma * z
        else:
            x = mean
    return x


def step_variances(diffusion: Diffusion, steps: int | None = None, spacing: str = "trailing", *,
                   sampler: str = "ddpm", eta: float = 1.0, variance: str = "beta_tilde",
                   steps_offset: int = 0) -> list[float]:
    """sigma^2 of each of `sample`'s steps, in sampling order (the last is 0): what the sampler adds."""
    ts = sampling_timesteps(diffusion.T, diffusion.T if steps is None else steps, spacing, steps_offset)
    proc = diffusion.respaced(ts)
    out = []
    for n, t in enumerate(ts):
        i = len(ts) - 1 - n
        if i == 0:
            out.append(0.0)
        elif sampler == "ddim":
            out.append(ddim_sigma(float(diffusion.alphas_cumprod[t]), float(proc.alphas_cumprod_prev[i]), eta) ** 2)
        elif variance == "beta_tilde":
            out.append(math.exp(float(proc.posterior_log_variance_clipped[i])))
        else:
            out.append(float(proc.betas[i]))
    return out
