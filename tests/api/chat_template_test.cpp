// Chat templates against transformers' apply_chat_template (fixtures from
// tools/make_chat_fixtures.py), plus the errors bad templates and inputs must give.
#include "api/jinja/chat_template.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace earnserve {
namespace {

using OrderedJson = nlohmann::ordered_json;

const std::string kFixtureDir = std::string(EARNSERVE_SOURCE_DIR) + "/tests/fixtures/chat/";
const std::string kTokenizerDir = std::string(EARNSERVE_SHARED_DIR) + "/tokenizers/";

OrderedJson read_fixture(const std::string& name) {
  std::ifstream in(kFixtureDir + name + ".json");
  EXPECT_TRUE(in.good()) << "missing fixture " << name;
  return OrderedJson::parse(in);
}

// Context as transformers builds it: the special tokens, then the case's own variables.
OrderedJson case_context(const OrderedJson& tokens, const OrderedJson& test_case) {
  OrderedJson context = tokens;
  for (auto it = test_case["extra_context"].begin(); it != test_case["extra_context"].end(); ++it) {
    context[it.key()] = it.value();
  }
  return context;
}

void expect_model_fixture_matches(const std::string& model) {
  const OrderedJson fixture = read_fixture(model);
  auto text = load_chat_template(kTokenizerDir + model);
  ASSERT_TRUE(text.ok()) << text.status().to_string();
  auto tokens = load_chat_template_tokens(kTokenizerDir + model);
  ASSERT_TRUE(tokens.ok()) << tokens.status().to_string();
  EXPECT_EQ(*tokens, fixture["special_tokens_map"]);
  auto chat_template = ChatTemplate::parse(*text);
  ASSERT_TRUE(chat_template.ok()) << chat_template.status().to_string();
  ASSERT_GT(fixture["cases"].size(), 2u);
  for (const OrderedJson& test_case : fixture["cases"]) {
    SCOPED_TRACE(model + "/" + test_case["name"].get<std::string>());
    ChatTemplateOptions options;
    options.add_generation_prompt = test_case["add_generation_prompt"].get<bool>();
    auto rendered =
        chat_template->render(test_case["messages"], case_context(*tokens, test_case), options);
    ASSERT_TRUE(rendered.ok()) << rendered.status().to_string();
    EXPECT_EQ(*rendered, test_case["expected"].get<std::string>());
  }
}

TEST(ChatTemplateTest, Qwen3MatchesTransformers) { expect_model_fixture_matches("qwen3"); }

TEST(ChatTemplateTest, Llama3MatchesTransformers) { expect_model_fixture_matches("llama3"); }

TEST(ChatTemplateTest, JinjaFeatureTemplatesMatchTransformers) {
  const OrderedJson fixture = read_fixture("features");
  ASSERT_GT(fixture["cases"].size(), 5u);
  for (const OrderedJson& test_case : fixture["cases"]) {
    SCOPED_TRACE(test_case["name"].get<std::string>());
    auto chat_template = ChatTemplate::parse(test_case["template"].get<std::string>());
    ASSERT_TRUE(chat_template.ok()) << chat_template.status().to_string();
    ChatTemplateOptions options;
    options.add_generation_prompt = test_case["add_generation_prompt"].get<bool>();
    auto rendered =
        chat_template->render(test_case["messages"], test_case["extra_context"], options);
    ASSERT_TRUE(rendered.ok()) << rendered.status().to_string();
    EXPECT_EQ(*rendered, test_case["expected"].get<std::string>());
  }
}

TEST(ChatTemplateTest, FreeFunctionRendersPlainJson) {
  const OrderedJson fixture = read_fixture("llama3");
  auto text = load_chat_template(kTokenizerDir + "llama3");
  ASSERT_TRUE(text.ok());
  const OrderedJson& test_case = fixture["cases"][0];
  nlohmann::json context = nlohmann::json(case_context(fixture["special_tokens_map"], test_case));
  auto rendered = render_chat_template(*text, nlohmann::json(test_case["messages"]),
                                       test_case["add_generation_prompt"].get<bool>(), context);
  ASSERT_TRUE(rendered.ok()) << rendered.status().to_string();
  EXPECT_EQ(*rendered, test_case["expected"].get<std::string>());
}

TEST(ChatTemplateTest, StrftimeNowUsesTheFixedTime) {
  auto chat_template = ChatTemplate::parse(
      "{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}"
      "{%- endif %}Today Date: {{ date_string }}");
  ASSERT_TRUE(chat_template.ok());
  ChatTemplateOptions options;
  std::tm day{};
  day.tm_year = 2024 - 1900;
  day.tm_mon = 6;
  day.tm_mday = 26;
  options.now = day;
  const OrderedJson messages = OrderedJson::parse(R"([{"role": "user", "content": "hi"}])");
  auto fixed = chat_template->render(messages, OrderedJson::object(), options);
  ASSERT_TRUE(fixed.ok()) << fixed.status().to_string();
  EXPECT_EQ(*fixed, "Today Date: 26 Jul 2024");
  auto given = chat_template->render(messages, {{"date_string", "1 Jan 2025"}}, options);
  ASSERT_TRUE(given.ok());
  EXPECT_EQ(*given, "Today Date: 1 Jan 2025");
}

// The error for rendering `text` with one user message; fails the test if it renders.
std::string render_error(const std::string& text,
                         const OrderedJson& context = OrderedJson::object()) {
  const OrderedJson messages = OrderedJson::parse(R"([{"role": "user", "content": "hi"}])");
  auto chat_template = ChatTemplate::parse(text);
  if (!chat_template.ok()) return chat_template.status().message();
  auto rendered = chat_template->render(messages, context, ChatTemplateOptions());
  EXPECT_FALSE(rendered.ok()) << "rendered: " << *rendered;
  return rendered.ok() ? "" : rendered.status().message();
}

TEST(ChatTemplateTest, MalformedTemplatesNameTheLine) {
  EXPECT_EQ(render_error("a\n{% if messages %}x"), "chat template line 2: 'if' is never closed");
  EXPECT_EQ(render_error("{{ 1 + }}"), "chat template line 1: unexpected '}}' in expression");
  EXPECT_EQ(render_error("\n\n{% frobnicate %}"), "chat template line 3: unknown tag 'frobnicate'");
  EXPECT_EQ(render_error("{% endfor %}"), "chat template line 1: unexpected '{% endfor %}'");
  EXPECT_EQ(render_error("{{ 'open }}"), "chat template line 1: unterminated string literal");
  EXPECT_EQ(render_error("x {{ messages"), "chat template line 1: tag is never closed with '}}'");
  EXPECT_EQ(render_error("{# note"), "chat template line 1: comment is never closed with '#}'");
  EXPECT_EQ(render_error("{{ a ? b }}"), "chat template line 1: unexpected character '?' in tag");
  EXPECT_EQ(render_error("{% for x in %}{% endfor %}"),
            "chat template line 1: unexpected '%}' in expression");
}

TEST(ChatTemplateTest, UnknownFiltersAndTestsAreParseErrors) {
  EXPECT_EQ(render_error("line one\n{{ messages | shuffle }}"),
            "chat template line 2: unknown filter 'shuffle'");
  EXPECT_EQ(render_error("{% if messages is shiny %}{% endif %}"),
            "chat template line 1: unknown test 'shiny'");
  EXPECT_EQ(render_error("{{ messages | map('nope') | list }}"),
            "chat template line 1: filter 'map': unknown filter 'nope'");
}

TEST(ChatTemplateTest, RaiseExceptionMessageBecomesTheError) {
  const std::string text =
      "{%- for m in messages %}\n"
      "{%- if m.role == 'user' and loop.first %}"
      "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
      "{%- endif %}{%- endfor %}";
  EXPECT_EQ(render_error(text),
            "chat template line 2: raise_exception: Conversation roles must alternate "
            "user/assistant/user/assistant/...");
}

TEST(ChatTemplateTest, RuntimeErrorsAreStatusesNotCrashes) {
  EXPECT_EQ(render_error("{{ missing + 'x' }}"), "chat template line 1: 'missing' is undefined");
  EXPECT_EQ(render_error("{{ messages[0].nope.deeper }}"),
            "chat template line 1: 'dict object' has no attribute 'nope'");
  EXPECT_EQ(render_error("{{ 'a' + 1 }}"),
            "chat template line 1: unsupported operand types for +: 'str' and 'int'");
  EXPECT_EQ(render_error("{{ 1 // 0 }}"),
            "chat template line 1: integer division or modulo by zero");
  EXPECT_EQ(render_error("{{ 'a' < 1 }}"),
            "chat template line 1: '<' not supported between instances of 'str' and 'int'");
  EXPECT_EQ(render_error("{% for x in 5 %}{% endfor %}"),
            "chat template line 1: 'int' object is not iterable");
  EXPECT_EQ(render_error("{{ messages() }}"),
            "chat template line 1: 'list' object is not callable");
  EXPECT_EQ(render_error("{% set ns = 3 %}{% set ns.x = 1 %}"),
            "chat template line 1: cannot assign attribute on 'ns': it is not a namespace()");
  EXPECT_EQ(render_error("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"),
            "chat template line 1: macros nest too deeply");
  EXPECT_EQ(render_error("{{ " + std::string(2000, '(') + "1" + std::string(2000, ')') + " }}"),
            "chat template line 1: template nests too deeply");
  // An index after a dot too large for an integer (found by chat_template_fuzzer).
  EXPECT_EQ(render_error("{{ messages.99999999999999999999999 }}"),
            "chat template line 1: index '99999999999999999999999' is out of range");
  EXPECT_EQ(render_error("{{ 99999999999999999999999 }}"),
            "chat template line 1: number '99999999999999999999999' is out of range");
}

// Prefixes of a real template (cut mid-tag, mid-string, mid-block) either render or give an
// error; parse errors name a line. None may crash.
TEST(ChatTemplateTest, TruncatedRealTemplatesFailCleanly) {
  auto text = load_chat_template(kTokenizerDir + "qwen3");
  ASSERT_TRUE(text.ok());
  const OrderedJson messages = read_fixture("qwen3")["cases"][7]["messages"];
  const OrderedJson context = {{"tools", OrderedJson::array()}};
  int num_errors = 0;
  for (size_t length = 0; length <= text->size(); length += 7) {
    auto chat_template = ChatTemplate::parse(text->substr(0, length));
    if (!chat_template.ok()) {
      EXPECT_EQ(chat_template.status().message().rfind("chat template line ", 0), 0u)
          << chat_template.status().message();
      ++num_errors;
      continue;
    }
    auto rendered = chat_template->render(messages, context, ChatTemplateOptions());
    if (!rendered.ok()) ++num_errors;
  }
  EXPECT_GT(num_errors, 100);
}

TEST(ChatTemplateTest, BadMessagesAreRejected) {
  auto chat_template = ChatTemplate::parse("{{ messages | length }}");
  ASSERT_TRUE(chat_template.ok());
  auto empty =
      chat_template->render(OrderedJson::array(), OrderedJson::object(), ChatTemplateOptions());
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().message(), "cannot apply a chat template to an empty conversation");
  auto not_object = chat_template->render(OrderedJson::parse(R"(["hi"])"), OrderedJson::object(),
                                          ChatTemplateOptions());
  ASSERT_FALSE(not_object.ok());
  EXPECT_EQ(not_object.status().message(), "chat message 0 is not an object");
  auto reserved = chat_template->render(OrderedJson::parse(R"([{"role": "user"}])"),
                                        {{"messages", 1}}, ChatTemplateOptions());
  ASSERT_FALSE(reserved.ok());
  EXPECT_EQ(reserved.status().message(), "chat template context may not set 'messages'");
}

class ChatTemplateLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() /
        ("chat_template_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
         "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }

  std::filesystem::path dir_;
};

TEST_F(ChatTemplateLoadTest, TakesTheDefaultOfATemplateList) {
  write(
      "tokenizer_config.json",
      R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}],
            "bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>", "unk_token": null})");
  auto text = load_chat_template(dir_.string());
  ASSERT_TRUE(text.ok()) << text.status().to_string();
  EXPECT_EQ(*text, "D");
  auto tokens = load_chat_template_tokens(dir_.string());
  ASSERT_TRUE(tokens.ok());
  EXPECT_EQ(*tokens, OrderedJson::parse(R"({"bos_token": "<s>", "eos_token": "</s>"})"));
}

TEST_F(ChatTemplateLoadTest, PrefersChatTemplateJinja) {
  write("tokenizer_config.json", R"({"chat_template": "from config"})");
  write("chat_template.jinja", "from file");
  auto text = load_chat_template(dir_.string());
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "from file");
}

TEST_F(ChatTemplateLoadTest, ReportsMissingAndMalformedConfigs) {
  const std::string config = (dir_ / "tokenizer_config.json").string();
  auto missing = load_chat_template(dir_.string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), config + ": cannot open");
  write("tokenizer_config.json", "{not json");
  auto broken = load_chat_template(dir_.string());
  ASSERT_FALSE(broken.ok());
  EXPECT_EQ(broken.status().message(), config + ": not valid JSON");
  write("tokenizer_config.json", R"({"eos_token": "</s>"})");
  auto absent = load_chat_template(dir_.string());
  ASSERT_FALSE(absent.ok());
  EXPECT_EQ(absent.status().message(), config + ": no chat_template (and no chat_template.jinja)");
  write("tokenizer_config.json", R"({"chat_template": [{"name": "tool_use", "template": "T"}]})");
  auto no_default = load_chat_template(dir_.string());
  ASSERT_FALSE(no_default.ok());
  EXPECT_EQ(no_default.status().message(),
            config + ": chat_template lists no template named \"default\"");
  write("tokenizer_config.json", R"({"chat_template": 7})");
  auto wrong_type = load_chat_template(dir_.string());
  ASSERT_FALSE(wrong_type.ok());
  EXPECT_EQ(wrong_type.status().message(),
            config + ": chat_template is neither a string nor a list");
}

}  // namespace
}  // namespace earnserve
