// Parameter-name patterns (see patterns.h).
#include "patterns.h"

#include <algorithm>
#include <regex>
#include <sstream>

#include <c10/util/Exception.h>

namespace finetune {

bool name_matches(const std::string& name, const std::string& pattern, const char* field) {
  if (name == pattern || (name.size() > pattern.size() && name.compare(0, pattern.size(), pattern) == 0 &&
                          name[pattern.size()] == '.')) {
    return true;
  }
  try {
    return std::regex_match(name, std::regex(pattern));
  } catch (const std::regex_error& e) {
    TORCH_CHECK_VALUE(false, field, " pattern '", pattern, "' is not a valid regular expression: ", e.what());
  }
  return false;
}

bool matches_any(const std::string& name, const StringList& patterns, const char* field) {
  for (const auto& pattern : patterns) {
    if (name_matches(name, pattern, field)) return true;
  }
  return false;
}

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// What a pattern could have meant: module paths and parameter names within a small edit distance of it.
std::string close_matches(const std::string& pattern, const NamedTensors& params) {
  std::vector<std::string> candidates;
  for (const auto& [name, p] : params) {
    for (size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', dot + 1)) {
      candidates.push_back(name.substr(0, dot));
    }
    candidates.push_back(name);
  }
  std::sort(candidates.begin(), candidates.end());
  candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  const size_t tolerance = std::max<size_t>(2, pattern.size() / 4);
  std::vector<std::pair<size_t, std::string>> close;
  for (const auto& c : candidates) {
    const size_t d = edit_distance(pattern, c);
    if (d <= tolerance) close.emplace_back(d, c);
  }
  std::sort(close.begin(), close.end());
  std::ostringstream out;
  for (size_t i = 0; i < std::min<size_t>(close.size(), 5); ++i) out << (i ? ", " : "") << "'" << close[i].second << "'";
  return out.str();
}

std::string parameter_list(const NamedTensors& params) {
  constexpr size_t shown = 20;
  std::ostringstream out;
  for (size_t i = 0; i < std::min(params.size(), shown); ++i) out << (i ? ", " : "") << "'" << params[i].first << "'";
  if (params.size() > shown) out << ", ... (" << params.size() - shown << " more)";
  return out.str();
}

void check_pattern(const std::string& pattern, const NamedTensors& params, const std::string& field) {
  for (const auto& [name, p] : params) {
    if (name_matches(name, pattern, field.c_str())) return;
  }
  const auto close = close_matches(pattern, params);
  TORCH_CHECK_VALUE(false, field, " pattern '", pattern, "' matches no parameter of the model",
                    close.empty() ? "" : "; close matches: ", close, "; its parameters are [", parameter_list(params),
                    "] (a pattern is a name, a dotted prefix such as 'encoder.layer.0', or a regular expression)");
}

}  // namespace

void check_patterns(const NamedTensors& params, const TrainConfig& config) {
  for (const auto& pattern : config.freeze) check_pattern(pattern, params, "freeze");
  for (const auto& [pattern, multiplier] : config.lr_groups) check_pattern(pattern, params, "lr_groups");
  for (const auto& [epoch, patterns] : config.unfreeze_at) {
    TORCH_CHECK_VALUE(epoch < config.epochs, "unfreeze_at epoch ", epoch, " is never reached: epochs=", config.epochs,
                      " and epochs count from 0 (the last is ", config.epochs - 1, ")");
    for (const auto& pattern : patterns) {
      check_pattern(pattern, params, "unfreeze_at[" + std::to_string(epoch) + "]");
    }
  }
}

}  // namespace finetune
