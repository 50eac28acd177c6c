#include "api/jinja/parser.h"

#include <algorithm>
#include <initializer_list>
#include <set>

#include "api/jinja/filters.h"
#include "api/jinja/lexer.h"

namespace earnserve::jinja {
namespace {

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  StatusOr<std::shared_ptr<const Template>> run();

 private:
  // Statements until "{% <one of end_names>": leaves the position on that name.
  Status parse_body(const std::set<std::string>& end_names, const std::string& opener,
                    int opener_line, StmtList& out);
  Status parse_statement(StmtList& out);
  Status parse_if(int line, StmtList& out);
  Status parse_for(int line, StmtList& out);
  Status parse_set(int line, StmtList& out);
  Status parse_macro(int line, StmtList& out);

  StatusOr<ExprPtr> parse_tuple();
  StatusOr<ExprPtr> parse_expression(bool with_condition = true);
  StatusOr<ExprPtr> parse_condition();
  StatusOr<ExprPtr> parse_or();
  StatusOr<ExprPtr> parse_and();
  StatusOr<ExprPtr> parse_not();
  StatusOr<ExprPtr> parse_compare();
  StatusOr<ExprPtr> parse_math1();
  StatusOr<ExprPtr> parse_concat();
  StatusOr<ExprPtr> parse_math2();
  StatusOr<ExprPtr> parse_pow();
  StatusOr<ExprPtr> parse_unary(bool with_filter);
  StatusOr<ExprPtr> parse_unary_with_filter();
  // Left-associative operators `ops` (symbols, or keywords such as "and") between operands
  // parsed by `operand`.
  StatusOr<ExprPtr> parse_binary_level(StatusOr<ExprPtr> (Parser::*operand)(),
                                       std::initializer_list<const char*> ops);
  StatusOr<ExprPtr> parse_primary();
  StatusOr<ExprPtr> parse_postfix(ExprPtr expr);
  StatusOr<ExprPtr> parse_filters_and_tests(ExprPtr expr);
  StatusOr<ExprPtr> parse_subscript(ExprPtr expr);
  // After "(": arguments up to and including ")".
  Status parse_call_args(Expr& call);

  const Token& peek(size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  const Token& next() { return tokens_[std::min(pos_++, tokens_.size() - 1)]; }
  bool at_op(const char* op) const {
    return peek().kind == TokenKind::kOperator && peek().text == op;
  }
  bool at_name(const char* name) const {
    return peek().kind == TokenKind::kName && peek().text == name;
  }
  Status expect_op(const char* op);
  Status expect_block_end();
  StatusOr<std::string> expect_name();
  Status error(const std::string& message) const { return error_at(peek().line, message); }
  static Status error_at(int line, const std::string& message) {
    return invalid_argument("chat template line " + std::to_string(line) + ": " + message);
  }
  static ExprPtr make(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }
  std::string describe(const Token& t) const;

  static constexpr int kMaxDepth = 256;

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;  // recursion depth, bounded so hostile nesting is an error, not a stack overflow
};

// Counts one level of parser recursion while alive.
class NestingGuard {
 public:
  explicit NestingGuard(int& depth) : depth_(depth) { ++depth_; }
  ~NestingGuard() { --depth_; }
  NestingGuard(const NestingGuard&) = delete;
  NestingGuard& operator=(const NestingGuard&) = delete;

 private:
  int& depth_;
};

std::string Parser::describe(const Token& t) const {
  switch (t.kind) {
    case TokenKind::kEnd:
      return "end of template";
    case TokenKind::kData:
      return "text";
    case TokenKind::kString:
      return "string literal";
    default:
      return "'" + t.text + "'";
  }
}

Status Parser::expect_op(const char* op) {
  if (!at_op(op)) return error(std::string("expected '") + op + "', got " + describe(peek()));
  ++pos_;
  return Status::Ok();
}

Status Parser::expect_block_end() {
  if (peek().kind != TokenKind::kBlockEnd) {
    return error("expected end of statement '%}', got " + describe(peek()));
  }
  ++pos_;
  return Status::Ok();
}

StatusOr<std::string> Parser::expect_name() {
  if (peek().kind != TokenKind::kName) return error("expected a name, got " + describe(peek()));
  return next().text;
}

StatusOr<std::shared_ptr<const Template>> Parser::run() {
  auto tmpl = std::make_shared<Template>();
  while (peek().kind != TokenKind::kEnd) {
    ES_RETURN_IF_ERROR(parse_statement(tmpl->body));
  }
  return std::shared_ptr<const Template>(std::move(tmpl));
}

Status Parser::parse_body(const std::set<std::string>& end_names, const std::string& opener,
                          int opener_line, StmtList& out) {
  while (true) {
    if (peek().kind == TokenKind::kEnd) {
      return error_at(opener_line, "'" + opener + "' is never closed");
    }
    if (peek().kind == TokenKind::kBlockBegin && peek(1).kind == TokenKind::kName &&
        end_names.count(peek(1).text) > 0) {
      ++pos_;
      return Status::Ok();
    }
    ES_RETURN_IF_ERROR(parse_statement(out));
  }
}

Status Parser::parse_statement(StmtList& out) {
  NestingGuard guard(depth_);
  if (depth_ > kMaxDepth) return error("template nests too deeply");
  const Token& token = next();
  if (token.kind == TokenKind::kData) {
    auto stmt = std::make_unique<Stmt>();
    stmt->kind = Stmt::Kind::kText;
    stmt->line = token.line;
    stmt->text = token.text;
    out.push_back(std::move(stmt));
    return Status::Ok();
  }
  if (token.kind == TokenKind::kVarBegin) {
    auto stmt = std::make_unique<Stmt>();
    stmt->kind = Stmt::Kind::kPrint;
    stmt->line = token.line;
    ES_ASSIGN_OR_RETURN(stmt->expr, parse_tuple());
    if (peek().kind != TokenKind::kVarEnd) return error("expected '}}', got " + describe(peek()));
    ++pos_;
    out.push_back(std::move(stmt));
    return Status::Ok();
  }
  if (token.kind != TokenKind::kBlockBegin)
    return error_at(token.line, "unexpected " + describe(token));
  const int line = token.line;
  ES_ASSIGN_OR_RETURN(std::string tag, expect_name());
  if (tag == "if") return parse_if(line, out);
  if (tag == "for") return parse_for(line, out);
  if (tag == "set") return parse_set(line, out);
  if (tag == "macro") return parse_macro(line, out);
  if (tag == "break" || tag == "continue") {
    auto stmt = std::make_unique<Stmt>();
    stmt->kind = tag == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
    stmt->line = line;
    out.push_back(std::move(stmt));
    return expect_block_end();
  }
  if (tag == "generation") {
    auto stmt = std::make_unique<Stmt>();
    stmt->kind = Stmt::Kind::kScope;
    stmt->line = line;
    stmt->bodies.emplace_back();
    ES_RETURN_IF_ERROR(expect_block_end());
    ES_RETURN_IF_ERROR(parse_body({"endgeneration"}, "generation", line, stmt->bodies[0]));
    ++pos_;
    out.push_back(std::move(stmt));
    return expect_block_end();
  }
  static const std::set<std::string> kEndTags = {"endif", "endfor", "endset",        "endmacro",
                                                 "elif",  "else",   "endgeneration", "endraw"};
  if (kEndTags.count(tag) > 0) return error_at(line, "unexpected '{% " + tag + " %}'");
  return error_at(line, "unknown tag '" + tag + "'");
}

Status Parser::parse_if(int line, StmtList& out) {
  auto stmt = std::make_unique<Stmt>();
  stmt->kind = Stmt::Kind::kIf;
  stmt->line = line;
  while (true) {
    ES_ASSIGN_OR_RETURN(ExprPtr condition, parse_tuple());
    stmt->conditions.push_back(std::move(condition));
    ES_RETURN_IF_ERROR(expect_block_end());
    stmt->bodies.emplace_back();
    ES_RETURN_IF_ERROR(parse_body({"elif", "else", "endif"}, "if", line, stmt->bodies.back()));
    const std::string tag = next().text;
    if (tag == "elif") continue;
    if (tag == "else") {
      ES_RETURN_IF_ERROR(expect_block_end());
      stmt->bodies.emplace_back();
      ES_RETURN_IF_ERROR(parse_body({"endif"}, "if", line, stmt->bodies.back()));
      ++pos_;
    }
    break;
  }
  out.push_back(std::move(stmt));
  return expect_block_end();
}

Status Parser::parse_for(int line, StmtList& out) {
  auto stmt = std::make_unique<Stmt>();
  stmt->kind = Stmt::Kind::kFor;
  stmt->line = line;
  const bool parenthesised = at_op("(");
  if (parenthesised) ++pos_;
  while (true) {
    ES_ASSIGN_OR_RETURN(std::string target, expect_name());
    stmt->targets.push_back(target);
    if (!at_op(",")) break;
    ++pos_;
  }
  if (parenthesised) ES_RETURN_IF_ERROR(expect_op(")"));
  if (!at_name("in")) return error("expected 'in' in for loop, got " + describe(peek()));
  ++pos_;
  ES_ASSIGN_OR_RETURN(stmt->expr, parse_expression(/*with_condition=*/false));
  if (at_name("if")) {
    ++pos_;
    ES_ASSIGN_OR_RETURN(stmt->condition, parse_expression());
  }
  if (at_name("recursive")) return error("recursive for loops are not supported");
  ES_RETURN_IF_ERROR(expect_block_end());
  stmt->bodies.emplace_back();
  ES_RETURN_IF_ERROR(parse_body({"endfor", "else"}, "for", line, stmt->bodies[0]));
  if (next().text == "else") {
    ES_RETURN_IF_ERROR(expect_block_end());
    stmt->bodies.emplace_back();
    ES_RETURN_IF_ERROR(parse_body({"endfor"}, "for", line, stmt->bodies[1]));
    ++pos_;
  }
  out.push_back(std::move(stmt));
  return expect_block_end();
}

Status Parser::parse_set(int line, StmtList& out) {
  auto stmt = std::make_unique<Stmt>();
  stmt->kind = Stmt::Kind::kSet;
  stmt->line = line;
  ES_ASSIGN_OR_RETURN(std::string first, expect_name());
  if (at_op(".")) {
    ++pos_;
    stmt->namespace_name = first;
    ES_ASSIGN_OR_RETURN(std::string attribute, expect_name());
    stmt->targets.push_back(attribute);
  } else {
    stmt->targets.push_back(first);
    while (at_op(",")) {
      ++pos_;
      ES_ASSIGN_OR_RETURN(std::string target, expect_name());
      stmt->targets.push_back(target);
    }
  }
  if (at_op("=")) {
    ++pos_;
    ES_ASSIGN_OR_RETURN(stmt->expr, parse_tuple());
    out.push_back(std::move(stmt));
    return expect_block_end();
  }
  if (peek().kind != TokenKind::kBlockEnd) {
    return error("expected '=' or '%}' in set, got " + describe(peek()));
  }
  if (!stmt->namespace_name.empty() || stmt->targets.size() != 1) {
    return error_at(line, "a {% set %} block assigns one plain name");
  }
  ++pos_;
  stmt->kind = Stmt::Kind::kSetBlock;
  stmt->bodies.emplace_back();
  ES_RETURN_IF_ERROR(parse_body({"endset"}, "set", line, stmt->bodies[0]));
  ++pos_;
  out.push_back(std::move(stmt));
  return expect_block_end();
}

Status Parser::parse_macro(int line, StmtList& out) {
  auto stmt = std::make_unique<Stmt>();
  stmt->kind = Stmt::Kind::kMacro;
  stmt->line = line;
  ES_ASSIGN_OR_RETURN(stmt->text, expect_name());
  ES_RETURN_IF_ERROR(expect_op("("));
  while (!at_op(")")) {
    ES_ASSIGN_OR_RETURN(std::string param, expect_name());
    stmt->targets.push_back(param);
    ExprPtr default_value;
    if (at_op("=")) {
      ++pos_;
      ES_ASSIGN_OR_RETURN(default_value, parse_expression());
    }
    stmt->defaults.push_back(std::move(default_value));
    if (!at_op(",")) break;
    ++pos_;
  }
  ES_RETURN_IF_ERROR(expect_op(")"));
  ES_RETURN_IF_ERROR(expect_block_end());
  stmt->bodies.emplace_back();
  ES_RETURN_IF_ERROR(parse_body({"endmacro"}, "macro", line, stmt->bodies[0]));
  ++pos_;
  out.push_back(std::move(stmt));
  return expect_block_end();
}

// ---- Expressions, lowest precedence first (as Jinja's parser) ---------------------------------

StatusOr<ExprPtr> Parser::parse_tuple() {
  const int line = peek().line;
  ES_ASSIGN_OR_RETURN(ExprPtr first, parse_expression());
  if (!at_op(",")) return first;
  ExprPtr tuple = make(Expr::Kind::kTuple, line);
  tuple->children.push_back(std::move(first));
  while (at_op(",")) {
    ++pos_;
    if (peek().kind == TokenKind::kVarEnd || peek().kind == TokenKind::kBlockEnd || at_op(")"))
      break;
    ES_ASSIGN_OR_RETURN(ExprPtr item, parse_expression());
    tuple->children.push_back(std::move(item));
  }
  return tuple;
}

StatusOr<ExprPtr> Parser::parse_expression(bool with_condition) {
  NestingGuard guard(depth_);
  if (depth_ > kMaxDepth) return error("template nests too deeply");
  return with_condition ? parse_condition() : parse_or();
}

StatusOr<ExprPtr> Parser::parse_condition() {
  ES_ASSIGN_OR_RETURN(ExprPtr expr, parse_or());
  while (at_name("if")) {
    const int line = next().line;
    ExprPtr cond = make(Expr::Kind::kCondition, line);
    ES_ASSIGN_OR_RETURN(ExprPtr test, parse_or());
    ExprPtr otherwise;
    if (at_name("else")) {
      ++pos_;
      ES_ASSIGN_OR_RETURN(otherwise, parse_condition());
    }
    cond->children.push_back(std::move(expr));
    cond->children.push_back(std::move(test));
    cond->children.push_back(std::move(otherwise));
    expr = std::move(cond);
  }
  return expr;
}

StatusOr<ExprPtr> Parser::parse_or() { return parse_binary_level(&Parser::parse_and, {"or"}); }
StatusOr<ExprPtr> Parser::parse_and() { return parse_binary_level(&Parser::parse_not, {"and"}); }

StatusOr<ExprPtr> Parser::parse_not() {
  NestingGuard guard(depth_);
  if (depth_ > kMaxDepth) return error("template nests too deeply");
  if (!at_name("not")) return parse_compare();
  ExprPtr node = make(Expr::Kind::kUnary, next().line);
  node->name = "not";
  ES_ASSIGN_OR_RETURN(ExprPtr operand, parse_not());
  node->children.push_back(std::move(operand));
  return node;
}

StatusOr<ExprPtr> Parser::parse_compare() {
  const int line = peek().line;
  ES_ASSIGN_OR_RETURN(ExprPtr first, parse_math1());
  ExprPtr node;
  while (true) {
    std::string op;
    if (peek().kind == TokenKind::kOperator &&
        (peek().text == "==" || peek().text == "!=" || peek().text == "<" || peek().text == "<=" ||
         peek().text == ">" || peek().text == ">=")) {
      op = next().text;
    } else if (at_name("in")) {
      ++pos_;
      op = "in";
    } else if (at_name("not") && peek(1).kind == TokenKind::kName && peek(1).text == "in") {
      pos_ += 2;
      op = "not in";
    } else {
      break;
    }
    if (!node) {
      node = make(Expr::Kind::kCompare, line);
      node->children.push_back(std::move(first));
    }
    node->ops.push_back(op);
    ES_ASSIGN_OR_RETURN(ExprPtr operand, parse_math1());
    node->children.push_back(std::move(operand));
  }
  return node ? std::move(node) : std::move(first);
}

StatusOr<ExprPtr> Parser::parse_binary_level(StatusOr<ExprPtr> (Parser::*operand)(),
                                             std::initializer_list<const char*> ops) {
  ES_ASSIGN_OR_RETURN(ExprPtr left, (this->*operand)());
  while ((peek().kind == TokenKind::kOperator || peek().kind == TokenKind::kName) &&
         std::any_of(ops.begin(), ops.end(), [&](const char* op) { return peek().text == op; })) {
    const Token& op = next();
    ExprPtr node = make(Expr::Kind::kBinary, op.line);
    node->name = op.text;
    ES_ASSIGN_OR_RETURN(ExprPtr right, (this->*operand)());
    node->children.push_back(std::move(left));
    node->children.push_back(std::move(right));
    left = std::move(node);
  }
  return left;
}

StatusOr<ExprPtr> Parser::parse_math1() {
  return parse_binary_level(&Parser::parse_concat, {"+", "-"});
}
StatusOr<ExprPtr> Parser::parse_concat() { return parse_binary_level(&Parser::parse_math2, {"~"}); }
StatusOr<ExprPtr> Parser::parse_math2() {
  return parse_binary_level(&Parser::parse_pow, {"*", "/", "//", "%"});
}
StatusOr<ExprPtr> Parser::parse_pow() {
  return parse_binary_level(&Parser::parse_unary_with_filter, {"**"});
}
StatusOr<ExprPtr> Parser::parse_unary_with_filter() { return parse_unary(true); }

StatusOr<ExprPtr> Parser::parse_unary(bool with_filter) {
  NestingGuard guard(depth_);
  if (depth_ > kMaxDepth) return error("template nests too deeply");
  ExprPtr expr;
  if (at_op("-") || at_op("+")) {
    expr = make(Expr::Kind::kUnary, peek().line);
    expr->name = next().text;
    ES_ASSIGN_OR_RETURN(ExprPtr operand, parse_unary(false));
    expr->children.push_back(std::move(operand));
  } else {
    ES_ASSIGN_OR_RETURN(expr, parse_primary());
  }
  ES_ASSIGN_OR_RETURN(expr, parse_postfix(std::move(expr)));
  if (with_filter) return parse_filters_and_tests(std::move(expr));
  return expr;
}

StatusOr<ExprPtr> Parser::parse_primary() {
  const Token& token = peek();
  const int line = token.line;
  if (token.kind == TokenKind::kName) {
    ++pos_;
    const std::string& name = token.text;
    ExprPtr literal = make(Expr::Kind::kLiteral, line);
    if (name == "true" || name == "True") {
      literal->literal = true;
    } else if (name == "false" || name == "False") {
      literal->literal = false;
    } else if (name == "none" || name == "None") {
      literal->literal = nullptr;
    } else {
      ExprPtr ref = make(Expr::Kind::kName, line);
      ref->name = name;
      return ref;
    }
    return literal;
  }
  if (token.kind == TokenKind::kString) {
    ExprPtr literal = make(Expr::Kind::kLiteral, line);
    std::string text;
    while (peek().kind == TokenKind::kString) text += next().text;
    literal->literal = text;
    return literal;
  }
  if (token.kind == TokenKind::kInteger || token.kind == TokenKind::kFloat) {
    ++pos_;
    ExprPtr literal = make(Expr::Kind::kLiteral, line);
    try {
      if (token.kind == TokenKind::kInteger) {
        literal->literal = static_cast<int64_t>(std::stoll(token.text));
      } else {
        literal->literal = std::stod(token.text);
      }
    } catch (const std::exception&) {
      return error_at(line, "number '" + token.text + "' is out of range");
    }
    return literal;
  }
  if (at_op("(")) {
    ++pos_;
    if (at_op(")")) {
      ++pos_;
      return make(Expr::Kind::kTuple, line);
    }
    ES_ASSIGN_OR_RETURN(ExprPtr inner, parse_tuple());
    ES_RETURN_IF_ERROR(expect_op(")"));
    return inner;
  }
  if (at_op("[")) {
    ++pos_;
    ExprPtr list = make(Expr::Kind::kList, line);
    while (!at_op("]")) {
      ES_ASSIGN_OR_RETURN(ExprPtr item, parse_expression());
      list->children.push_back(std::move(item));
      if (!at_op(",")) break;
      ++pos_;
    }
    ES_RETURN_IF_ERROR(expect_op("]"));
    return list;
  }
  if (at_op("{")) {
    ++pos_;
    ExprPtr dict = make(Expr::Kind::kDict, line);
    while (!at_op("}")) {
      ES_ASSIGN_OR_RETURN(ExprPtr key, parse_expression());
      ES_RETURN_IF_ERROR(expect_op(":"));
      ES_ASSIGN_OR_RETURN(ExprPtr value, parse_expression());
      dict->children.push_back(std::move(key));
      dict->children.push_back(std::move(value));
      if (!at_op(",")) break;
      ++pos_;
    }
    ES_RETURN_IF_ERROR(expect_op("}"));
    return dict;
  }
  return error("unexpected " + describe(token) + " in expression");
}

StatusOr<ExprPtr> Parser::parse_postfix(ExprPtr expr) {
  while (true) {
    if (at_op(".")) {
      const int line = next().line;
      if (peek().kind == TokenKind::kInteger) {
        ExprPtr item = make(Expr::Kind::kGetItem, line);
        ExprPtr index = make(Expr::Kind::kLiteral, line);
        const std::string digits = next().text;
        try {
          index->literal = static_cast<int64_t>(std::stoll(digits));
        } catch (const std::exception&) {
          return error_at(line, "index '" + digits + "' is out of range");
        }
        item->children.push_back(std::move(expr));
        item->children.push_back(std::move(index));
        expr = std::move(item);
        continue;
      }
      ES_ASSIGN_OR_RETURN(std::string attribute, expect_name());
      ExprPtr node = make(Expr::Kind::kGetAttr, line);
      node->name = attribute;
      node->children.push_back(std::move(expr));
      expr = std::move(node);
    } else if (at_op("[")) {
      ES_ASSIGN_OR_RETURN(expr, parse_subscript(std::move(expr)));
    } else if (at_op("(")) {
      ExprPtr call = make(Expr::Kind::kCall, next().line);
      call->children.push_back(std::move(expr));
      ES_RETURN_IF_ERROR(parse_call_args(*call));
      expr = std::move(call);
    } else {
      return expr;
    }
  }
}

StatusOr<ExprPtr> Parser::parse_subscript(ExprPtr expr) {
  const int line = next().line;  // "["
  ExprPtr parts[3];
  bool is_slice = false;
  if (!at_op(":")) {
    ES_ASSIGN_OR_RETURN(parts[0], parse_expression());
  }
  if (at_op(":")) {
    is_slice = true;
    ++pos_;
    if (!at_op("]") && !at_op(":")) {
      ES_ASSIGN_OR_RETURN(parts[1], parse_expression());
    }
    if (at_op(":")) {
      ++pos_;
      if (!at_op("]")) {
        ES_ASSIGN_OR_RETURN(parts[2], parse_expression());
      }
    }
  }
  ES_RETURN_IF_ERROR(expect_op("]"));
  ExprPtr node = make(is_slice ? Expr::Kind::kSlice : Expr::Kind::kGetItem, line);
  node->children.push_back(std::move(expr));
  node->children.push_back(std::move(parts[0]));
  if (is_slice) {
    node->children.push_back(std::move(parts[1]));
    node->children.push_back(std::move(parts[2]));
  }
  return node;
}

Status Parser::parse_call_args(Expr& call) {
  while (!at_op(")")) {
    if (at_op("*") || at_op("**")) return error("*args and **kwargs in calls are not supported");
    if (peek().kind == TokenKind::kName && peek(1).kind == TokenKind::kOperator &&
        peek(1).text == "=") {
      std::string key = next().text;
      ++pos_;
      ES_ASSIGN_OR_RETURN(ExprPtr value, parse_expression());
      call.keyword.emplace_back(std::move(key), std::move(value));
    } else {
      if (!call.keyword.empty()) return error("positional argument after keyword argument");
      ES_ASSIGN_OR_RETURN(ExprPtr value, parse_expression());
      call.children.push_back(std::move(value));
    }
    if (!at_op(",")) break;
    ++pos_;
  }
  return expect_op(")");
}

StatusOr<ExprPtr> Parser::parse_filters_and_tests(ExprPtr expr) {
  while (true) {
    if (at_op("|")) {
      const int line = next().line;
      ES_ASSIGN_OR_RETURN(std::string name, expect_name());
      if (!is_known_filter(name)) return error_at(line, "unknown filter '" + name + "'");
      ExprPtr filter = make(Expr::Kind::kFilter, line);
      filter->name = name;
      filter->children.push_back(std::move(expr));
      if (at_op("(")) {
        ++pos_;
        ES_RETURN_IF_ERROR(parse_call_args(*filter));
      }
      expr = std::move(filter);
    } else if (at_name("is")) {
      const int line = next().line;
      ExprPtr test = make(Expr::Kind::kTest, line);
      if (at_name("not")) {
        ++pos_;
        test->negated = true;
      }
      ES_ASSIGN_OR_RETURN(test->name, expect_name());
      if (!is_known_test(test->name)) return error_at(line, "unknown test '" + test->name + "'");
      test->children.push_back(std::move(expr));
      const TokenKind kind = peek().kind;
      if (at_op("(")) {
        ++pos_;
        ES_RETURN_IF_ERROR(parse_call_args(*test));
      } else if ((kind == TokenKind::kName || kind == TokenKind::kString ||
                  kind == TokenKind::kInteger || kind == TokenKind::kFloat || at_op("[") ||
                  at_op("{")) &&
                 !at_name("else") && !at_name("or") && !at_name("and")) {
        // Jinja's one-argument form without parentheses: "x is divisibleby 3".
        ES_ASSIGN_OR_RETURN(ExprPtr arg, parse_primary());
        ES_ASSIGN_OR_RETURN(arg, parse_postfix(std::move(arg)));
        test->children.push_back(std::move(arg));
      }
      expr = std::move(test);
    } else if (at_op("(")) {
      ExprPtr call = make(Expr::Kind::kCall, next().line);
      call->children.push_back(std::move(expr));
      ES_RETURN_IF_ERROR(parse_call_args(*call));
      expr = std::move(call);
    } else {
      return expr;
    }
  }
}

}  // namespace

StatusOr<std::shared_ptr<const Template>> parse_template(const std::string& source) {
  ES_ASSIGN_OR_RETURN(std::vector<Token> tokens, lex_template(source));
  Parser parser(std::move(tokens));
  return parser.run();
}

}  // namespace earnserve::jinja
