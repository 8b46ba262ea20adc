// Where the model directory is: the option, $UNMASK_MODEL, or the bundled model.
#pragma once

#include <string>

namespace unmask {

// The model directory to use: `option` if given, else $UNMASK_MODEL, else the bundled model
// next to the executable (build tree), under the install prefix, or in the source tree.
// Throws an input error (exit 3) when none is given and the bundled model is not found.
std::string resolve_model_dir(const std::string& option);

}  // namespace unmask
