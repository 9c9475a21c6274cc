#pragma once
// Flow-matching solvers on host F32 latents: Euler (the Lightning 4-step recipe) and the two
// multistep solvers the official Wan pipelines offer, re-implemented from their definitions:
//   unipc  FlowUniPCMultistepScheduler (wan/utils/fm_solvers_unipc.py): bh2 UniP predictor,
//          UniC corrector from the 2nd step on, order <= 2, last step first-order.
//   dpm++  FlowDPMSolverMultistepScheduler (wan/utils/fm_solvers.py): DPM-Solver++(2M) midpoint,
//          first and last steps first-order.
// Both predict x0 = x - sigma * v from the flow prediction v, with alpha = 1 - sigma and
// lambda = log(alpha / sigma). Scalars are computed in double, tensors stored in F32 as the
// official code stores them.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace fisdit::sched {

enum class SolverKind : uint8_t { Euler, UniPC, DpmPP };

// "euler", "unipc" or "dpm++" ("dpmpp" also accepted); throws fisdit::Error naming --solver.
SolverKind parse_solver(const std::string& name);
const char* solver_name(SolverKind kind);

struct FlowSchedule {
  std::vector<float> sigmas;     // steps + 1 values (F32, as the official tables), the last 0
  std::vector<float> timesteps;  // the `steps` timesteps the DiT receives
};

// UniPC as the pipelines call set_timesteps(steps, shift=shift): sigma_k = linspace(0.999, 0,
// steps+1)[k] shifted by s*u / (1 + (s-1)*u) in double; timestep_k = int64(sigma_k * 1000)
// (truncated), e.g. steps 4, shift 5 -> 999, 937, 833, 624.
FlowSchedule flow_unipc_schedule(int steps, double shift);
// DPM++ with get_sampling_sigmas(steps, shift): the same from u = linspace(1, 0, steps+1), so
// the first sigma is exactly 1 (steps 4, shift 5 -> 1000, 937, 833, 625).
FlowSchedule flow_dpm_schedule(int steps, double shift);
// The schedule of `kind` (Euler: flow_euler_schedule). Throws naming --steps / --shift.
FlowSchedule flow_schedule(SolverKind kind, int steps, double shift);

// One sampling run: call step() once per timestep, in order.
class FlowSolver {
 public:
  virtual ~FlowSolver() = default;
  FlowSolver(const FlowSolver&) = delete;
  FlowSolver& operator=(const FlowSolver&) = delete;

  const FlowSchedule& schedule() const { return schedule_; }
  int steps() const { return static_cast<int>(schedule_.timesteps.size()); }
  int next_step() const { return next_; }
  // Moves the host F32 latent x from sigmas[k] to sigmas[k+1], k = next_step(), given the flow
  // prediction v (host F32, the shape of x) at sigmas[k]. Throws past the last step.
  void step(const Tensor& v, Tensor& x);

 protected:
  explicit FlowSolver(FlowSchedule schedule) : schedule_(std::move(schedule)) {}
  virtual void advance(int k, const float* v, float* x, int64_t n) = 0;

 private:
  FlowSchedule schedule_;
  int next_ = 0;
};

std::unique_ptr<FlowSolver> make_flow_solver(SolverKind kind, int steps, double shift);

}  // namespace fisdit::sched
