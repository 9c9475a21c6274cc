#pragma once
// Switches read from the environment (the FISDIT_* knobs of the README's table).
namespace fisdit {

// A 0/1 switch: `fallback` when `name` is unset or empty; any other value than 0 or 1 is an
// Error naming the variable.
bool env_switch(const char* name, bool fallback);

}  // namespace fisdit
