#include "sched/flow_solvers.h"

#include <algorithm>
#include <cmath>

#include "fisdit/error.h"
#include "sched/flow_euler.h"

// Built with -ffp-contract=off (CMakeLists.txt): the schedules must round a*b+c as numpy does,
// or a timestep near a whole number could truncate to its neighbour.

namespace fisdit::sched {

SolverKind parse_solver(const std::string& name) {
  if (name == "euler") return SolverKind::Euler;
  if (name == "unipc") return SolverKind::UniPC;
  if (name == "dpm++" || name == "dpmpp") return SolverKind::DpmPP;
  throw ParamError("solver", ": must be euler, unipc or dpm++, got '" + name + "'");
}

const char* solver_name(SolverKind kind) {
  switch (kind) {
    case SolverKind::Euler:
      return "euler";
    case SolverKind::UniPC:
      return "unipc";
    case SolverKind::DpmPP:
      return "dpm++";
  }
  return "?";
}

namespace {

void check_steps_and_shift(int steps, double shift) {
  if (steps < 1) throw ParamError("steps", ": must be >= 1, got " + std::to_string(steps));
  if (!(shift > 0) || !std::isfinite(shift)) throw ParamError("shift", ": must be > 0");
}

// numpy.linspace(start, stop, num)[k] for k < num - 1: start + k * ((stop - start) / (num - 1)).
double linspace_at(double start, double stop, int num, int k) {
  const double step = (stop - start) / static_cast<double>(num - 1);
  return static_cast<double>(k) * step + start;
}

// Both official schedules: shift u in double, store sigma as F32, timestep = int64(sigma * 1000).
FlowSchedule shifted_integer_schedule(int steps, double shift, double u_max) {
  FlowSchedule s;
  for (int k = 0; k < steps; ++k) {
    const double u = linspace_at(u_max, 0.0, steps + 1, k);
    const double sigma = shift * u / (1.0 + (shift - 1.0) * u);
    s.sigmas.push_back(static_cast<float>(sigma));
    s.timesteps.push_back(static_cast<float>(static_cast<int64_t>(sigma * 1000.0)));
  }
  s.sigmas.push_back(0.0f);
  return s;
}

// lambda = log(alpha) - log(sigma) with alpha = 1 - sigma: -inf at sigma 1, +inf at sigma 0;
// the updates below only ever take exp(-h) or 1/r of the infinite cases (both 0).
double lambda_of(float sigma) {
  const double s = sigma;
  return std::log(1.0 - s) - std::log(s);
}

// x0 = x - sigma * v, the data prediction both multistep solvers work on (stored F32).
void predict_x0(const float* v, const float* x, float sigma, float* x0, int64_t n) {
  const double s = sigma;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    x0[i] = static_cast<float>(static_cast<double>(x[i]) - s * static_cast<double>(v[i]));
}

class EulerSolver final : public FlowSolver {
 public:
  EulerSolver(int steps, double shift)
      : FlowSolver([&] {
          const EulerSchedule e = flow_euler_schedule(steps, static_cast<float>(shift));
          return FlowSchedule{e.sigmas, e.timesteps};
        }()) {}

 private:
  // x += (sigma' - sigma) * v in F32, exactly as the device loop did it with add_scaled.
  void advance(int k, const float* v, float* x, int64_t n) override {
    const auto& sg = schedule().sigmas;
    const float dt = sg[static_cast<size_t>(k) + 1] - sg[static_cast<size_t>(k)];
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) x[i] += dt * v[i];
  }
};

// Shared by the multistep solvers: the last two x0 predictions.
class MultistepSolver : public FlowSolver {
 protected:
  using FlowSolver::FlowSolver;
  void push_x0(std::vector<float>&& x0) {
    older_x0_ = std::move(newer_x0_);
    newer_x0_ = std::move(x0);
    history_ = std::min(history_ + 1, 2);
  }
  float sigma(int k) const { return schedule().sigmas[static_cast<size_t>(k)]; }
  std::vector<float> newer_x0_, older_x0_;
  int history_ = 0;  // how many x0 predictions are held (at most 2)
};

// UniPC with B(h) = expm1(-h) ("bh2"), predict_x0, solver order 2, lower order on the last step
// (fm_solvers_unipc.py; Zhao et al. 2023, UniPC, Alg. 1 and 2 in the data-prediction form).
class UniPCSolver final : public MultistepSolver {
 public:
  UniPCSolver(int steps, double shift) : MultistepSolver(flow_unipc_schedule(steps, shift)) {}

 private:
  void advance(int k, const float* v, float* x, int64_t n) override {
    const size_t count = static_cast<size_t>(n);
    // The prediction comes from the sample as the previous predictor left it; the corrector
    // then refines that sample with it before the next predictor step starts from it.
    std::vector<float> x0(count);
    predict_x0(v, x, sigma(k), x0.data(), n);
    if (k > 0) correct(k, x0, x, n);
    push_x0(std::move(x0));
    const int order = std::min({2, steps() - k, history_});
    last_sample_.assign(x, x + n);
    last_order_ = order;
    predict(k, order, x, n);
  }

  // UniP: x_t = (sigma_t / sigma_s) x - alpha_t (e^{-h} - 1) m0 - alpha_t B(h) rho D1, with
  // rho = 1/2 for order 2 (the official simplification) and D1 = (m1 - m0) / r1.
  void predict(int k, int order, float* x, int64_t n) const {
    const float st = sigma(k + 1), ss = sigma(k);
    const double alpha_t = 1.0 - static_cast<double>(st);
    const double h = lambda_of(st) - lambda_of(ss);
    const double h_phi_1 = std::expm1(-h), b_h = h_phi_1;
    const double ratio = static_cast<double>(st) / static_cast<double>(ss);
    const float* m0 = newer_x0_.data();
    if (order == 1) {
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i)
        x[i] = static_cast<float>(ratio * x[i] - alpha_t * h_phi_1 * m0[i]);
      return;
    }
    const double r1 = (lambda_of(sigma(k - 1)) - lambda_of(ss)) / h;
    const double c1 = alpha_t * b_h * 0.5 / r1;
    const float* m1 = older_x0_.data();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i)
      x[i] = static_cast<float>(ratio * x[i] - alpha_t * h_phi_1 * m0[i] -
                                c1 * (static_cast<double>(m1[i]) - m0[i]));
  }

  // UniC of the previous step's order p, using the new prediction mt at sigma_k:
  //   x_k = (sigma_k / sigma_{k-1}) x_{k-1} - alpha_k (e^{-h} - 1) m0
  //         - alpha_k B(h) (rho_1 D1 + rho_t (mt - m0)),  D1 = (m1 - m0) / r1,
  // where [1 1; r1 1] (rho_1, rho_t) = (b1, b2), b_i = i! (-h) phi_{i+1}(-h) / B(h); for p = 1
  // there is no D1 and rho_t = 1/2.
  void correct(int k, const std::vector<float>& mt, float* x, int64_t n) const {
    const int p = last_order_;
    const float st = sigma(k), ss = sigma(k - 1);
    const double alpha_t = 1.0 - static_cast<double>(st);
    const double h = lambda_of(st) - lambda_of(ss), hh = -h;
    const double h_phi_1 = std::expm1(hh), b_h = h_phi_1;
    const double ratio = static_cast<double>(st) / static_cast<double>(ss);
    double rho_1 = 0.0, rho_t = 0.5, r1 = 1.0;
    if (p == 2) {
      r1 = (lambda_of(sigma(k - 2)) - lambda_of(ss)) / h;
      const double h_phi_k1 = h_phi_1 / hh - 1.0;
      const double h_phi_k2 = h_phi_k1 / hh - 0.5;
      const double b1 = h_phi_k1 / b_h, b2 = 2.0 * h_phi_k2 / b_h;
      rho_1 = (b1 - b2) / (1.0 - r1);
      rho_t = b1 - rho_1;
    }
    const float* m0 = newer_x0_.data();
    const float* m1 = p == 2 ? older_x0_.data() : m0;
    const float* last = last_sample_.data();
    const double c1 = alpha_t * b_h * rho_1 / r1, ct = alpha_t * b_h * rho_t;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const double d0 = m0[i];
      x[i] = static_cast<float>(ratio * last[i] - alpha_t * h_phi_1 * d0 -
                                c1 * (static_cast<double>(m1[i]) - d0) -
                                ct * (static_cast<double>(mt[i]) - d0));
    }
  }

  std::vector<float> last_sample_;  // the (corrected) sample the last predictor started from
  int last_order_ = 1;
};

// DPM-Solver++(2M), midpoint form (Lu et al. 2022, DPM-Solver++, Alg. 2): first step and the
// final step (to sigma 0) first-order.
class DpmSolver final : public MultistepSolver {
 public:
  DpmSolver(int steps, double shift) : MultistepSolver(flow_dpm_schedule(steps, shift)) {}

 private:
  void advance(int k, const float* v, float* x, int64_t n) override {
    std::vector<float> x0(static_cast<size_t>(n));
    predict_x0(v, x, sigma(k), x0.data(), n);
    push_x0(std::move(x0));
    const float st = sigma(k + 1), ss = sigma(k);
    const double alpha_t = 1.0 - static_cast<double>(st);
    const double h = lambda_of(st) - lambda_of(ss);
    const double c0 = alpha_t * (std::exp(-h) - 1.0);  // exp(-inf) = 0 at sigma 1 and 0
    const double ratio = static_cast<double>(st) / static_cast<double>(ss);
    const float* m0 = newer_x0_.data();
    const bool first_order = k == 0 || k == steps() - 1;
    if (first_order) {
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(ratio * x[i] - c0 * m0[i]);
      return;
    }
    // D1 = (m0 - m1) / r0 with r0 = h_0 / h; from sigma 1 (h_0 = inf) D1 vanishes.
    const double inv_r0 = h / (lambda_of(ss) - lambda_of(sigma(k - 1)));
    const double c1 = 0.5 * c0 * inv_r0;
    const float* m1 = older_x0_.data();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i)
      x[i] =
          static_cast<float>(ratio * x[i] - c0 * m0[i] - c1 * (m0[i] - static_cast<double>(m1[i])));
  }
};

}  // namespace

FlowSchedule flow_unipc_schedule(int steps, double shift) {
  check_steps_and_shift(steps, shift);
  // The scheduler's sigma_max: 1 - 1/1000 of its training table, read back from F32.
  const double sigma_max = static_cast<double>(static_cast<float>(1.0 - 1.0 / 1000.0));
  return shifted_integer_schedule(steps, shift, sigma_max);
}

FlowSchedule flow_dpm_schedule(int steps, double shift) {
  check_steps_and_shift(steps, shift);
  return shifted_integer_schedule(steps, shift, 1.0);
}

FlowSchedule flow_schedule(SolverKind kind, int steps, double shift) {
  switch (kind) {
    case SolverKind::UniPC:
      return flow_unipc_schedule(steps, shift);
    case SolverKind::DpmPP:
      return flow_dpm_schedule(steps, shift);
    case SolverKind::Euler:
      break;
  }
  check_steps_and_shift(steps, shift);
  const EulerSchedule e = flow_euler_schedule(steps, static_cast<float>(shift));
  return {e.sigmas, e.timesteps};
}

void FlowSolver::step(const Tensor& v, Tensor& x) {
  if (next_ >= steps())
    throw Error("solver step " + std::to_string(next_ + 1) + " of " + std::to_string(steps()) +
                ": the schedule is already finished");
  if (x.device() != Device::CPU || v.device() != Device::CPU)
    throw Error("solver step: latent and prediction must be host tensors");
  if (v.shape() != x.shape())
    throw Error("solver step: prediction " + shape_str(v.shape()) + " does not match latent " +
                shape_str(x.shape()));
  advance(next_, v.f32(), x.f32(), x.numel());
  ++next_;
}

std::unique_ptr<FlowSolver> make_flow_solver(SolverKind kind, int steps, double shift) {
  switch (kind) {
    case SolverKind::UniPC:
      return std::make_unique<UniPCSolver>(steps, shift);
    case SolverKind::DpmPP:
      return std::make_unique<DpmSolver>(steps, shift);
    case SolverKind::Euler:
      break;
  }
  check_steps_and_shift(steps, shift);
  return std::make_unique<EulerSolver>(steps, shift);
}

}  // namespace fisdit::sched
