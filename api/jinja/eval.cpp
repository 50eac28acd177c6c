#include "api/jinja/eval.h"

#include <cmath>
#include <unordered_map>

#include "api/jinja/builtins.h"
#include "api/jinja/filters.h"

namespace earnserve::jinja {
namespace {

constexpr int kMaxMacroDepth = 64;
constexpr const char* kLinePrefix = "chat template line ";

using Scope = std::unordered_map<std::string, Value>;

Status at_line(int line, const Status& status) {
  if (status.ok() || status.message().rfind(kLinePrefix, 0) == 0) return status;
  return Status(status.code(), kLinePrefix + std::to_string(line) + ": " + status.message());
}

Status operand_error(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined()) return invalid_argument(a.undefined_hint());
  if (b.is_undefined()) return invalid_argument(b.undefined_hint());
  return invalid_argument("unsupported operand types for " + op + ": '" + a.type_name() +
                          "' and '" + b.type_name() + "'");
}

Value number(double v) { return Value::from_json(Json(v)); }
Value number(int64_t v) { return Value::from_json(Json(v)); }

double python_mod(double a, double b) {
  const double r = std::fmod(a, b);
  return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}

StatusOr<Value> arithmetic(const std::string& op, const Value& a, const Value& b) {
  if (op == "+") {
    if (a.is_string() && b.is_string()) return Value::from_json(Json(a.str() + b.str()));
    if (a.is_list() && b.is_list()) {
      Json out = a.json();
      for (const Json& item : b.json()) out.push_back(item);
      return Value::from_json(std::move(out));
    }
  }
  if (op == "*" && ((a.is_string() || a.is_list()) && b.is_integer())) {
    const int64_t times = std::max<int64_t>(0, b.as_int());
    if (a.is_string()) {
      std::string out;
      for (int64_t i = 0; i < times; ++i) out += a.str();
      return Value::from_json(Json(out));
    }
    Json out = Json::array();
    for (int64_t i = 0; i < times; ++i) {
      for (const Json& item : a.json()) out.push_back(item);
    }
    return Value::from_json(std::move(out));
  }
  if (!a.is_number() || !b.is_number()) return operand_error(op, a, b);
  const bool use_float = a.is_float() || b.is_float();
  if (op == "/") {
    if (b.as_double() == 0) return invalid_argument("division by zero");
    return number(a.as_double() / b.as_double());
  }
  if (op == "**") {
    if (!use_float && b.as_int() >= 0) {
      int64_t result = 1;
      for (int64_t i = 0; i < b.as_int() && i < 64; ++i) result *= a.as_int();
      return number(result);
    }
    return number(std::pow(a.as_double(), b.as_double()));
  }
  if (use_float) {
    const double x = a.as_double(), y = b.as_double();
    if (op == "+") return number(x + y);
    if (op == "-") return number(x - y);
    if (op == "*") return number(x * y);
    if (y == 0) return invalid_argument("division by zero");
    if (op == "//") return number(std::floor(x / y));
    return number(python_mod(x, y));
  }
  const int64_t x = a.as_int(), y = b.as_int();
  if (op == "+") return number(x + y);
  if (op == "-") return number(x - y);
  if (op == "*") return number(x * y);
  if (y == 0) return invalid_argument("integer division or modulo by zero");
  int64_t quotient = x / y;
  if ((x % y != 0) && ((x < 0) != (y < 0))) --quotient;
  if (op == "//") return number(quotient);
  return number(x - quotient * y);
}

class Renderer {
 public:
  explicit Renderer(const std::vector<std::pair<std::string, Value>>& globals) {
    scopes_.emplace_back();
    for (const auto& [name, value] : globals) scopes_.front()[name] = value;
  }

  Status exec(const StmtList& body, std::string& out);

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  Status exec_one(const Stmt& stmt, std::string& out);
  Status exec_for(const Stmt& stmt, std::string& out);
  Status exec_set(const Stmt& stmt);
  Status define_macro(const Stmt& stmt);
  StatusOr<Value> eval(const Expr& expr);
  StatusOr<Value> eval_inner(const Expr& expr);
  StatusOr<CallArgs> eval_args(const Expr& expr, size_t first_child);
  StatusOr<Value> eval_binary(const Expr& expr);
  StatusOr<Value> eval_compare(const Expr& expr);
  Value lookup(const std::string& name) const;
  Status assign(const std::vector<std::string>& targets, const Value& value, int line);

  std::vector<Scope> scopes_;
  Flow flow_ = Flow::kNormal;
  int macro_depth_ = 0;
};

Value Renderer::lookup(const std::string& name) const {
  for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
    auto found = it->find(name);
    if (found != it->end()) return found->second;
  }
  return Value::undefined("'" + name + "' is undefined");
}

Status Renderer::assign(const std::vector<std::string>& targets, const Value& value, int line) {
  if (targets.size() == 1) {
    scopes_.back()[targets[0]] = value;
    return Status::Ok();
  }
  ES_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(value));
  if (items.size() != targets.size()) {
    return at_line(
        line, invalid_argument("cannot unpack " + std::to_string(items.size()) + " values into " +
                               std::to_string(targets.size()) + " names"));
  }
  for (size_t i = 0; i < targets.size(); ++i) scopes_.back()[targets[i]] = items[i];
  return Status::Ok();
}

Status Renderer::exec(const StmtList& body, std::string& out) {
  for (const auto& stmt : body) {
    ES_RETURN_IF_ERROR(exec_one(*stmt, out));
    if (flow_ != Flow::kNormal) return Status::Ok();
  }
  return Status::Ok();
}

Status Renderer::exec_one(const Stmt& stmt, std::string& out) {
  switch (stmt.kind) {
    case Stmt::Kind::kText:
      out += stmt.text;
      return Status::Ok();
    case Stmt::Kind::kPrint: {
      ES_ASSIGN_OR_RETURN(Value value, eval(*stmt.expr));
      out += to_output_string(value);
      return Status::Ok();
    }
    case Stmt::Kind::kIf:
      for (size_t i = 0; i < stmt.conditions.size(); ++i) {
        ES_ASSIGN_OR_RETURN(Value condition, eval(*stmt.conditions[i]));
        if (condition.truthy()) return exec(stmt.bodies[i], out);
      }
      if (stmt.bodies.size() > stmt.conditions.size()) return exec(stmt.bodies.back(), out);
      return Status::Ok();
    case Stmt::Kind::kFor:
      return exec_for(stmt, out);
    case Stmt::Kind::kSet:
      return exec_set(stmt);
    case Stmt::Kind::kSetBlock: {
      std::string text;
      ES_RETURN_IF_ERROR(exec(stmt.bodies[0], text));
      scopes_.back()[stmt.targets[0]] = Value::from_json(Json(std::move(text)));
      return Status::Ok();
    }
    case Stmt::Kind::kMacro:
      return define_macro(stmt);
    case Stmt::Kind::kBreak:
    case Stmt::Kind::kContinue:
      flow_ = stmt.kind == Stmt::Kind::kBreak ? Flow::kBreak : Flow::kContinue;
      return Status::Ok();
    case Stmt::Kind::kScope:
      return exec(stmt.bodies[0], out);
  }
  return Status::Ok();
}

Status Renderer::exec_for(const Stmt& stmt, std::string& out) {
  ES_ASSIGN_OR_RETURN(Value iterable, eval(*stmt.expr));
  auto items_or = iterate(iterable);
  if (!items_or.ok()) return at_line(stmt.line, items_or.status());
  std::vector<Value> items = std::move(items_or).value();
  if (stmt.condition) {
    std::vector<Value> kept;
    for (const Value& item : items) {
      scopes_.emplace_back();
      Status bound = assign(stmt.targets, item, stmt.line);
      auto keep = bound.ok() ? eval(*stmt.condition) : StatusOr<Value>(bound);
      scopes_.pop_back();
      if (!keep.ok()) return keep.status();
      if (keep->truthy()) kept.push_back(item);
    }
    items = std::move(kept);
  }
  const int64_t length = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < length; ++i) {
    Json loop = {{"index", i + 1},
                 {"index0", i},
                 {"revindex", length - i},
                 {"revindex0", length - i - 1},
                 {"first", i == 0},
                 {"last", i == length - 1},
                 {"length", length},
                 {"depth", 1},
                 {"depth0", 0}};
    if (i > 0 && items[i - 1].is_json()) loop["previtem"] = items[i - 1].json();
    if (i + 1 < length && items[i + 1].is_json()) loop["nextitem"] = items[i + 1].json();
    scopes_.emplace_back();
    scopes_.back()["loop"] = Value::from_json(std::move(loop));
    Status status = assign(stmt.targets, items[i], stmt.line);
    if (status.ok()) status = exec(stmt.bodies[0], out);
    scopes_.pop_back();
    ES_RETURN_IF_ERROR(status);
    const Flow flow = flow_;
    flow_ = Flow::kNormal;
    if (flow == Flow::kBreak) break;
  }
  if (length == 0 && stmt.bodies.size() > 1) return exec(stmt.bodies[1], out);
  return Status::Ok();
}

Status Renderer::exec_set(const Stmt& stmt) {
  ES_ASSIGN_OR_RETURN(Value value, eval(*stmt.expr));
  if (stmt.namespace_name.empty()) return assign(stmt.targets, value, stmt.line);
  Value ns = lookup(stmt.namespace_name);
  if (!ns.is_namespace()) {
    return at_line(stmt.line, invalid_argument("cannot assign attribute on '" +
                                               stmt.namespace_name + "': it is not a namespace()"));
  }
  if (Value* existing = ns.ns().find(stmt.targets[0])) {
    *existing = value;
  } else {
    ns.ns().attributes.emplace_back(stmt.targets[0], value);
  }
  return Status::Ok();
}

Status Renderer::define_macro(const Stmt& stmt) {
  const Stmt* macro = &stmt;
  scopes_.back()[stmt.text] =
      Value::from_callable(stmt.text, [this, macro](const CallArgs& args) -> StatusOr<Value> {
        if (macro_depth_ >= kMaxMacroDepth) return invalid_argument("macros nest too deeply");
        if (args.positional.size() > macro->targets.size()) {
          return invalid_argument("macro '" + macro->text + "' takes " +
                                  std::to_string(macro->targets.size()) + " arguments");
        }
        Scope params;
        for (size_t i = 0; i < macro->targets.size(); ++i) {
          const Value* given = args.find(i, macro->targets[i]);
          if (given != nullptr) {
            params[macro->targets[i]] = *given;
          } else if (macro->defaults[i]) {
            ES_ASSIGN_OR_RETURN(params[macro->targets[i]], eval(*macro->defaults[i]));
          } else {
            params[macro->targets[i]] =
                Value::undefined("'" + macro->targets[i] + "' is undefined");
          }
        }
        // A macro sees the template's globals and its own parameters, not its caller's locals.
        std::vector<Scope> saved = std::move(scopes_);
        scopes_ = {saved.front(), std::move(params)};
        ++macro_depth_;
        std::string text;
        Status status = exec(macro->bodies[0], text);
        --macro_depth_;
        flow_ = Flow::kNormal;
        scopes_ = std::move(saved);
        ES_RETURN_IF_ERROR(status);
        return Value::from_json(Json(std::move(text)));
      });
  return Status::Ok();
}

StatusOr<CallArgs> Renderer::eval_args(const Expr& expr, size_t first_child) {
  CallArgs args;
  for (size_t i = first_child; i < expr.children.size(); ++i) {
    ES_ASSIGN_OR_RETURN(Value v, eval(*expr.children[i]));
    args.positional.push_back(std::move(v));
  }
  for (const auto& [key, value_expr] : expr.keyword) {
    ES_ASSIGN_OR_RETURN(Value v, eval(*value_expr));
    args.keyword.emplace_back(key, std::move(v));
  }
  return args;
}

StatusOr<Value> Renderer::eval(const Expr& expr) {
  auto result = eval_inner(expr);
  if (!result.ok()) return at_line(expr.line, result.status());
  return result;
}

StatusOr<Value> Renderer::eval_inner(const Expr& expr) {
  switch (expr.kind) {
    case Expr::Kind::kLiteral:
      return Value::from_json(expr.literal);
    case Expr::Kind::kName:
      return lookup(expr.name);
    case Expr::Kind::kList:
    case Expr::Kind::kTuple: {
      Json out = Json::array();
      for (const auto& child : expr.children) {
        ES_ASSIGN_OR_RETURN(Value v, eval(*child));
        ES_ASSIGN_OR_RETURN(Json j, to_json(v));
        out.push_back(std::move(j));
      }
      return Value::from_json(std::move(out));
    }
    case Expr::Kind::kDict: {
      Json out = Json::object();
      for (size_t i = 0; i + 1 < expr.children.size(); i += 2) {
        ES_ASSIGN_OR_RETURN(Value key, eval(*expr.children[i]));
        if (!key.is_string())
          return invalid_argument("dict keys must be strings, got '" + key.type_name() + "'");
        ES_ASSIGN_OR_RETURN(Value v, eval(*expr.children[i + 1]));
        ES_ASSIGN_OR_RETURN(out[key.str()], to_json(v));
      }
      return Value::from_json(std::move(out));
    }
    case Expr::Kind::kGetAttr: {
      ES_ASSIGN_OR_RETURN(Value object, eval(*expr.children[0]));
      return get_attribute(object, expr.name);
    }
    case Expr::Kind::kGetItem: {
      ES_ASSIGN_OR_RETURN(Value object, eval(*expr.children[0]));
      ES_ASSIGN_OR_RETURN(Value key, eval(*expr.children[1]));
      return get_item(object, key);
    }
    case Expr::Kind::kSlice: {
      ES_ASSIGN_OR_RETURN(Value object, eval(*expr.children[0]));
      Value parts[3];
      for (int i = 0; i < 3; ++i) {
        if (expr.children[i + 1]) {
          ES_ASSIGN_OR_RETURN(parts[i], eval(*expr.children[i + 1]));
        }
      }
      return slice_value(object, expr.children[1] ? &parts[0] : nullptr,
                         expr.children[2] ? &parts[1] : nullptr,
                         expr.children[3] ? &parts[2] : nullptr);
    }
    case Expr::Kind::kCall: {
      ES_ASSIGN_OR_RETURN(Value callee, eval(*expr.children[0]));
      if (callee.is_undefined()) return invalid_argument(callee.undefined_hint());
      if (!callee.is_callable())
        return invalid_argument("'" + callee.type_name() + "' object is not callable");
      ES_ASSIGN_OR_RETURN(CallArgs args, eval_args(expr, 1));
      return callee.callable().function(args);
    }
    case Expr::Kind::kFilter: {
      ES_ASSIGN_OR_RETURN(Value operand, eval(*expr.children[0]));
      ES_ASSIGN_OR_RETURN(CallArgs args, eval_args(expr, 1));
      return apply_filter(expr.name, operand, args);
    }
    case Expr::Kind::kTest: {
      ES_ASSIGN_OR_RETURN(Value operand, eval(*expr.children[0]));
      ES_ASSIGN_OR_RETURN(CallArgs args, eval_args(expr, 1));
      ES_ASSIGN_OR_RETURN(bool pass, apply_test(expr.name, operand, args));
      return Value::from_json(Json(pass != expr.negated));
    }
    case Expr::Kind::kUnary: {
      ES_ASSIGN_OR_RETURN(Value operand, eval(*expr.children[0]));
      if (expr.name == "not") return Value::from_json(Json(!operand.truthy()));
      if (!operand.is_number()) {
        if (operand.is_undefined()) return invalid_argument(operand.undefined_hint());
        return invalid_argument("bad operand type for unary " + expr.name + ": '" +
                                operand.type_name() + "'");
      }
      if (expr.name == "+") return operand.is_bool() ? number(operand.as_int()) : operand;
      return operand.is_float() ? number(-operand.as_double()) : number(-operand.as_int());
    }
    case Expr::Kind::kBinary:
      return eval_binary(expr);
    case Expr::Kind::kCompare:
      return eval_compare(expr);
    case Expr::Kind::kCondition: {
      ES_ASSIGN_OR_RETURN(Value condition, eval(*expr.children[1]));
      if (condition.truthy()) return eval(*expr.children[0]);
      if (expr.children[2]) return eval(*expr.children[2]);
      return Value::undefined("the conditional expression has no else branch");
    }
  }
  return internal_error("unknown expression kind");
}

StatusOr<Value> Renderer::eval_binary(const Expr& expr) {
  ES_ASSIGN_OR_RETURN(Value left, eval(*expr.children[0]));
  if (expr.name == "and") return left.truthy() ? eval(*expr.children[1]) : left;
  if (expr.name == "or") return left.truthy() ? left : eval(*expr.children[1]);
  ES_ASSIGN_OR_RETURN(Value right, eval(*expr.children[1]));
  if (expr.name == "~")
    return Value::from_json(Json(to_output_string(left) + to_output_string(right)));
  return arithmetic(expr.name, left, right);
}

StatusOr<Value> Renderer::eval_compare(const Expr& expr) {
  ES_ASSIGN_OR_RETURN(Value left, eval(*expr.children[0]));
  for (size_t i = 0; i < expr.ops.size(); ++i) {
    ES_ASSIGN_OR_RETURN(Value right, eval(*expr.children[i + 1]));
    const std::string& op = expr.ops[i];
    bool pass = false;
    if (op == "==" || op == "!=") {
      pass = python_equal(left, right) == (op == "==");
    } else if (op == "in" || op == "not in") {
      CallArgs args;
      args.positional.push_back(right);
      ES_ASSIGN_OR_RETURN(bool found, apply_test("in", left, args));
      pass = found == (op == "in");
    } else {
      if (left.is_undefined() || right.is_undefined()) return operand_error(op, left, right);
      if (op == "<") {
        ES_ASSIGN_OR_RETURN(pass, python_less(left, right));
      } else if (op == ">") {
        ES_ASSIGN_OR_RETURN(pass, python_less(right, left));
      } else if (op == "<=") {
        ES_ASSIGN_OR_RETURN(bool greater, python_less(right, left));
        pass = !greater;
      } else {
        ES_ASSIGN_OR_RETURN(bool less, python_less(left, right));
        pass = !less;
      }
    }
    if (!pass) return Value::from_json(Json(false));
    left = std::move(right);
  }
  return Value::from_json(Json(true));
}

}  // namespace

StatusOr<std::string> render_template(const Template& tmpl,
                                      const std::vector<std::pair<std::string, Value>>& globals) {
  Renderer renderer(globals);
  std::string out;
  ES_RETURN_IF_ERROR(renderer.exec(tmpl.body, out));
  return out;
}

}  // namespace earnserve::jinja
