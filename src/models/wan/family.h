#pragma once
// Wan 2.1 / 2.2 as a model family (models/family.h): its configs, checkpoints and DiTs.
#include "models/family.h"

namespace fisdit::wan {

models::Family family();

}  // namespace fisdit::wan
