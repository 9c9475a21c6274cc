#include "core/env.h"

#include <gtest/gtest.h>

#include <string>

#include "../env_scope.h"
#include "fisdit/error.h"

namespace fisdit {
namespace {

TEST(EnvSwitch, ReadsZeroOrOneAndNamesTheVariableOtherwise) {
  const char* name = "FISDIT_TEST_SWITCH";
  {
    test::EnvScope unset(name, nullptr);
    EXPECT_TRUE(env_switch(name, true));
    EXPECT_FALSE(env_switch(name, false));
  }
  {
    test::EnvScope empty(name, "");
    EXPECT_TRUE(env_switch(name, true));
  }
  {
    test::EnvScope on(name, "1");
    EXPECT_TRUE(env_switch(name, false));
  }
  {
    test::EnvScope off(name, "0");
    EXPECT_FALSE(env_switch(name, true));
  }
  test::EnvScope bad(name, "yes");
  try {
    env_switch(name, false);
    ADD_FAILURE() << "'yes' was taken";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'yes'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace fisdit
