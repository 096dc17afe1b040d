// Parameter-name patterns (freeze, unfreeze_at, lr_groups): what a pattern matches, and the check that each
// one matches something.
#pragma once

#include <string>

#include "config.h"
#include "models.h"

namespace finetune {

// Whether a parameter name matches a pattern: the name itself, a prefix of dotted components ("layers.0"
// matches "layers.0.weight"), or a regular expression matching the whole name. A bad regex is a ValueError
// naming `field`.
bool name_matches(const std::string& name, const std::string& pattern, const char* field);
bool matches_any(const std::string& name, const StringList& patterns, const char* field);

// Every pattern in freeze, lr_groups and unfreeze_at matches at least one parameter, and every unfreeze_at
// epoch is reached (< epochs). The error lists the close matches and the model's parameter names.
void check_patterns(const NamedTensors& params, const TrainConfig& config);

}  // namespace finetune
