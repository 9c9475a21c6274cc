#include "analysis/calibrate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>

#include "analysis/redundancy.h"
#include "fisdit/error.h"

namespace fisdit::analysis {

namespace {

std::string fmt(const char* f, double a, double b = 0, double c = 0, double d = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, a, b, c, d);
  return buf;
}

double num(const nlohmann::json& v) {
  return v.is_number() ? v.get<double>() : std::numeric_limits<double>::infinity();
}

struct Measured {
  accel::FisConfig config;
  double error = 0;  // max over sparse steps and frames of the final block's error
};

}  // namespace

namespace {

using Say = std::function<void(const std::string&)>;

// The measured FIS settings of stride > 1 with their largest final-block frame error over the
// sparse steps, by increasing stride.
std::vector<Measured> read_measured(const nlohmann::json& a, const std::string& source, int blocks,
                                    int steps) {
  const nlohmann::json& fis = a.value("fis", nlohmann::json::array());
  std::vector<Measured> measured;
  try {
    for (const nlohmann::json& f : fis) {
      Measured m{accel::fis_from_json(f.at("config"), source), 0};
      if (m.config.stride < 2) continue;
      const nlohmann::json& err = f.at("error");
      for (int k = 0; k < steps - m.config.dense_last_steps; ++k)
        for (const nlohmann::json& v : err.at(k).at(blocks - 1))
          m.error = std::max(m.error, num(v));
      measured.push_back(m);
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(source + ": malformed \"fis\" entry: " + e.what());
  }
  if (measured.empty())
    throw Error(source +
                ": no FIS setting with stride > 1 was measured; run fisdit analyze "
                "with --fis (e.g. --fis balanced or --strides 2,3)");
  std::sort(measured.begin(), measured.end(),
            [](const Measured& x, const Measured& y) { return x.config.stride < y.config.stride; });
  return measured;
}

// The largest stride within the budget: measured ones in increasing order up to the first over
// it, or (one stride measured) extrapolated pessimistically.
int choose_stride(const std::vector<Measured>& measured, double budget, int frames,
                  const Say& say) {
  int stride = 1;
  if (measured.size() > 1) {
    // A larger stride that measured lower than a smaller one over the budget is not trusted.
    for (const Measured& m : measured) {
      if (!(m.error <= budget)) break;
      stride = m.config.stride;
    }
    say(stride > 1
            ? fmt("stride %.0f: the largest measured stride within the budget %.4g (every "
                  "smaller measured stride within it too)",
                  stride, budget)
            : fmt("stride 1 (dense): no measured stride keeps the error within %.4g", budget));
    return stride;
  }
  // One stride measured: assume the error grows quadratically in the gap (s - 1) above it and
  // shrinks only linearly below it, both on the pessimistic side of linear scaling.
  const Measured& base = measured.front();
  const double s0 = base.config.stride, e0 = base.error;
  const int max_stride = std::max(2, frames - 1);
  for (int s = 2; s <= max_stride; ++s) {
    const double r = (s - 1) / (s0 - 1);
    const double est = s >= s0 ? e0 * r * r : e0 * r;
    if (est <= budget) stride = s;
  }
  if (stride > 1) {
    const double r = (stride - 1) / (s0 - 1);
    say(
        fmt("stride %.0f: estimated error %.4g <= budget %.4g (one stride measured: error "
            "scaled by ((s-1)/(s0-1))^2 above s0, linearly below)",
            stride, stride >= s0 ? e0 * r * r : e0 * r, budget));
  } else {
    say(fmt("stride 1 (dense): even stride 2 is estimated above the budget %.4g", budget));
  }
  return stride;
}

// Interpolation risk of block l = (s_m - 1) / 2 * std_f(R_f), the largest over the sparse steps,
// at the smallest measured stride s_m.
std::vector<double> interpolation_risk(const nlohmann::json& a, const std::string& source,
                                       const Measured& base, int blocks, int steps) {
  std::vector<double> risk(static_cast<size_t>(blocks), 0.0);
  try {
    for (int k = 0; k < steps - base.config.dense_last_steps; ++k)
      for (int l = 0; l < blocks; ++l) {
        std::vector<double> r;
        for (const nlohmann::json& v : a.at("rel_change").at(k).at(l)) r.push_back(num(v));
        double mean = 0;
        for (double v : r) mean += v / static_cast<double>(std::max<size_t>(r.size(), 1));
        const double std_r = coefficient_of_variation(r) * mean;
        risk[static_cast<size_t>(l)] =
            std::max(risk[static_cast<size_t>(l)], (base.config.stride - 1) / 2.0 * std_r);
      }
  } catch (const nlohmann::json::exception& e) {
    throw Error(source + ": malformed \"rel_change\": " + e.what());
  }
  return risk;
}

}  // namespace

Calibration calibrate_fis(const nlohmann::json& a, double budget, const std::string& source) {
  if (!(budget > 0) || !std::isfinite(budget))
    throw ParamError("budget", ": must be a positive number (a relative error, e.g. 0.05), got " +
                                   std::to_string(budget));
  if (!a.is_object() || a.value("format", "") != "fisdit-analysis")
    throw Error(source +
                ": not an analysis JSON of fisdit analyze (no \"format\": "
                "\"fisdit-analysis\")");
  int blocks = 0, steps = 0, frames = 0;
  try {
    blocks = a.at("num_blocks").get<int>();
    steps = a.at("steps").get<int>();
    frames = a.at("frames").get<int>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(source + ": " + e.what());
  }
  const std::vector<Measured> measured = read_measured(a, source, blocks, steps);
  const Measured& base = measured.front();
  Calibration out;
  const Say say = [&](const std::string& s) { out.reasoning.push_back(s); };
  for (const Measured& m : measured)
    say(fmt("measured: stride %.0f (head %.0f, tail %.0f): max final-block frame error %.4g",
            m.config.stride, m.config.head, m.config.tail, m.error));
  int stride = choose_stride(measured, budget, frames, say);

  // Leading and trailing blocks whose interpolation risk exceeds the budget stay dense, never
  // fewer than in the measured setting.
  const std::vector<double> risk = interpolation_risk(a, source, base, blocks, steps);
  int head = 0, tail = 0;
  if (stride == 1) {
    say("head 0, tail 0, dense_last_steps 0: nothing runs sparse");
    accel::FisConfig c;
    c.name = "calibrated";
    out.config = c;
    return out;
  }
  std::string risks = "interpolation risk per block:";
  for (double v : risk) risks += fmt(" %.3g", v);
  say(risks);
  while (head < blocks && !(risk[static_cast<size_t>(head)] <= budget)) ++head;
  while (tail < blocks - head && !(risk[static_cast<size_t>(blocks - 1 - tail)] <= budget)) ++tail;
  say(fmt("head %.0f: leading blocks whose interpolation risk (s_m-1)/2*std_f(R_f) exceeds %.4g",
          head, budget) +
      (head < base.config.head ? fmt(" -> raised to the measured head %.0f", base.config.head)
                               : ""));
  say(fmt("tail %.0f: trailing blocks likewise", tail) +
      (tail < base.config.tail ? fmt(" -> raised to the measured tail %.0f", base.config.tail)
                               : ""));
  head = std::max(head, base.config.head);
  tail = std::max(tail, base.config.tail);
  if (head + tail >= blocks) {
    say("every block stays dense: no sparse block left, stride set to 1");
    stride = 1;
    head = tail = 0;
  }

  accel::FisConfig c = base.config;
  c.name = "calibrated";
  c.stride = stride;
  c.head = stride > 1 ? head : 0;
  c.tail = stride > 1 ? tail : 0;
  if (stride == 1) c.dense_last_steps = 0;
  say("dense_last_steps " + std::to_string(c.dense_last_steps) +
      ", granularity, reconstruction and interleaving as measured");
  c.validate();
  out.config = c;
  return out;
}

}  // namespace fisdit::analysis
