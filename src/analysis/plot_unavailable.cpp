// The figure writers of a build without cairo (-DFISDIT_FIGURES=OFF).
#include "analysis/plot.h"
#include "fisdit/error.h"

namespace fisdit::analysis {
namespace {
[[noreturn]] void unavailable(const std::string& path) {
  throw Error(path +
              ": this fisdit was built without figures (-DFISDIT_FIGURES=OFF); install cairo "
              "(Debian/Ubuntu: libcairo2-dev) and rebuild, or use analyze --no-figures");
}
}  // namespace

bool figures_available() { return false; }
void write_heatmap_png(const std::string& path, const Heatmap&, int, int) { unavailable(path); }
void write_line_plot_png(const std::string& path, const LinePlot&, int, int) { unavailable(path); }

}  // namespace fisdit::analysis
