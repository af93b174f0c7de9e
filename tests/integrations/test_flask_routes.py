"""flask_routes: every rule of a Flask app as the RouteSpec werkzeug would match it with."""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import flask
import pytest
from flask import Blueprint, Flask
from flask.views import MethodView
from werkzeug.routing import BaseConverter, Map, RequestRedirect, Rule

import meshware
from meshware import RouteSpec, TemplateError, parse_template
from meshware.integrations._flask_routes import flask_routes

STATIC = Path(__file__).parent


class SlugConverter(BaseConverter):
    regex = r"[a-z0-9-]+"


class RegexConverter(BaseConverter):
    def __init__(self, map: Map, *args: Any) -> None:
        super().__init__(map)
        self.regex = args[0]


class ListConverter(BaseConverter):
    """Keeps werkzeug's default regex: the same paths as a plain parameter."""

    def to_python(self, value: str) -> list[str]:
        return value.split(",")


class SubpathConverter(BaseConverter):
    regex = r"[a-z/]+"  # contains '/': werkzeug makes it part_isolating = False


def view(name: str) -> Callable[..., str]:
    def handler(**kwargs: Any) -> str:
        return name

    handler.__name__ = name
    return handler


def new_app(**kwargs: Any) -> Flask:
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static", **kwargs)
    app.url_map.converters.update(
        slug=SlugConverter, regex=RegexConverter, list=ListConverter, subpath=SubpathConverter
    )
    return app


@contextmanager
def no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --------------------------------------------------------------------------- a realistic app


class ItemAPI(MethodView):
    def get(self, item_id: int) -> str:
        return "items"

    @meshware.policy(idempotent=True, timeout=5.0)
    def put(self, item_id: int) -> str:
        return "items"

    @meshware.exclude
    def delete(self, item_id: int) -> str:
        return "items"


def login_required(func: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> str:
        return func(*args, **kwargs)

    return wrapper


def build_app() -> Flask:
    app = new_app()

    @app.get("/")
    @meshware.public
    def index() -> str:
        return "index"

    @app.get("/users/<int:user_id>")
    @meshware.policy(idempotent=True, timeout=2.0, retries=3)
    def user(user_id: int) -> str:
        return "user"

    @app.post("/users")
    @login_required
    @meshware.public
    def create_user() -> str:
        return "create_user"

    @app.get("/users/<int:user_id>/avatar.<any(png, jpg):ext>")
    def avatar(user_id: int, ext: str) -> str:
        return "avatar"

    @app.get("/archive/<regex('[0-9]{4}'):year>/<int(fixed_digits=2):month>")
    def archive(year: str, month: int) -> str:
        return "archive"

    @app.get("/lang/<string(length=2):code>/<slug:slug>")
    def page(code: str, slug: str) -> str:
        return "page"

    @app.get("/objects/<uuid:oid>/tags/<list:tags>")
    def object_tags(oid: Any, tags: list[str]) -> str:
        return "object_tags"

    @app.get("/offset/<float(signed=True):delta>")
    def offset(delta: float) -> str:
        return "offset"

    @app.get("/files/<path:filepath>")
    def files(filepath: str) -> str:
        return "files"

    @app.route("/ping", provide_automatic_options=False)
    def ping() -> str:
        return "ping"

    @app.get("/internal/debug")
    @meshware.exclude
    def debug() -> str:
        return "debug"

    app.add_url_rule("/items/<int:item_id>", view_func=ItemAPI.as_view("items"))
    app.add_url_rule(
        "/old-users/<int:user_id>", endpoint="old_user", redirect_to="/users/<user_id>"
    )
    app.add_url_rule("/people/<int:user_id>", endpoint="user", alias=True)
    app.url_map.add(Rule("/cdn/<path:name>", endpoint="cdn", build_only=True))

    api = Blueprint("api", __name__, static_folder=str(STATIC), static_url_path="/assets")
    v1 = Blueprint("v1", __name__, url_prefix="/v1")

    @api.get("/health")
    def health() -> str:
        return "health"

    @v1.route("/orders/<int:order_id>", methods=["GET", "DELETE"])
    def order(order_id: int) -> str:
        return "order"

    api.register_blueprint(v1)
    app.register_blueprint(api, url_prefix="/api")
    return app


GET = ("GET", "HEAD", "OPTIONS")

EXPECTED = [
    RouteSpec("/", GET, name="index", public=True),
    RouteSpec("/users/{user_id:int}", GET, name="user", idempotent=True, timeout=2.0, retries=3),
    # url_map lists rules grouped by endpoint: the alias comes with its endpoint.
    RouteSpec("/people/{user_id:int}", GET, name="user", idempotent=True, timeout=2.0, retries=3),
    RouteSpec("/users", ("OPTIONS", "POST"), name="create_user", public=True),
    RouteSpec("/users/{user_id:int}/avatar.{ext:re:(?:png|jpg)}", GET, name="avatar"),
    # werkzeug weighs number converters 50, the others 100: published when the canonical
    # converter would say otherwise (a fixed-width int is published as `re:`)
    RouteSpec(
        "/archive/{year:re:[0-9]{4}}/{month:re:[0-9]{2}}", GET, name="archive", weights=(100, 50)
    ),
    RouteSpec(r"/lang/{code:re:[^\x2f]{2}}/{slug:re:[a-z0-9-]+}", GET, name="page"),
    RouteSpec(
        "/objects/{oid:re:[A-Fa-f0-9]{8}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{12}}"
        "/tags/{tags}",
        GET,
        name="object_tags",
    ),
    RouteSpec(r"/offset/{delta:re:-?[0-9]+\.[0-9]+}", GET, name="offset", weights=(50,)),
    RouteSpec("/files/{filepath:path}", GET, name="files"),
    RouteSpec("/ping", ("GET", "HEAD"), name="ping"),
    RouteSpec("/items/{item_id:int}", GET, name="items"),
    RouteSpec("/items/{item_id:int}", ("PUT",), name="items", idempotent=True, timeout=5.0),
    RouteSpec("/old-users/{user_id:int}", GET, name="old_user"),
    RouteSpec("/api/health", GET, name="api.health"),
    RouteSpec("/api/v1/orders/{order_id:int}", ("DELETE", *GET), name="api.v1.order"),
]


def test_every_rule_is_published_as_werkzeug_matches_it() -> None:
    with no_warnings():
        assert flask_routes(build_app()) == EXPECTED


def test_every_published_template_is_canonical() -> None:
    for spec in flask_routes(build_app(), include_static=True):
        assert parse_template(spec.template).text == spec.template


def test_static_routes_of_app_and_blueprints_only_on_request() -> None:
    specs = flask_routes(build_app(), include_static=True)
    static = [s for s in specs if s.name in ("static", "api.static")]
    assert static == [
        RouteSpec("/static/{filename:path}", GET, name="static"),
        RouteSpec("/api/assets/{filename:path}", GET, name="api.static"),
    ]


def assert_flask_routes_to(app: Flask, spec: RouteSpec, path: str, host: str) -> None:
    for method in spec.methods:
        with app.test_request_context(path, method=method, base_url=f"http://{host}"):
            request = flask.request
            if isinstance(request.routing_exception, RequestRedirect):
                assert spec.template.startswith(("/old-users/", "/people/")), (spec, method)
                continue
            assert request.routing_exception is None, (spec, method, path)
            assert request.url_rule is not None
            assert request.url_rule.endpoint == spec.name, (spec, method, path)


def test_cross_check_each_published_route_is_the_one_flask_answers(
    example: Callable[..., str],
) -> None:
    app = build_app()
    for spec in flask_routes(app, include_static=True):
        assert_flask_routes_to(app, spec, example(spec.template), "localhost")


# --------------------------------------------------------------------------- converters

CONVERTERS = [
    ("/p/<name>", "/p/{name}"),
    ("/p/<string:name>", "/p/{name}"),
    ("/p/<string(length=2):code>", r"/p/{code:re:[^\x2f]{2}}"),
    ("/p/<string(minlength=2, maxlength=8):code>", r"/p/{code:re:[^\x2f]{2,8}}"),
    ("/p/<string(minlength=3):code>", r"/p/{code:re:[^\x2f]{3,}}"),
    ("/p/<int:n>", "/p/{n:int}"),
    ("/p/<int(min=0):n>", "/p/{n:int}"),
    ("/p/<float:x>", r"/p/{x:re:[0-9]+\.[0-9]+}"),
    ("/p/<int(fixed_digits=4):n>", "/p/{n:re:[0-9]{4}}"),
    ("/p/<int(signed=True):n>", "/p/{n:re:-?[0-9]+}"),
    ("/p/<int(fixed_digits=3, signed=True):n>", "/p/{n:re:(?:[0-9]{3}|-[0-9]{2})}"),
    ("/p/<float(signed=True):x>", r"/p/{x:re:-?[0-9]+\.[0-9]+}"),
    (
        "/p/<uuid:u>",
        "/p/{u:re:[A-Fa-f0-9]{8}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{12}}",
    ),
    ("/p/<path:rest>", "/p/{rest:path}"),
    ("/p/<any(png, jpg, 'tar.gz'):ext>", r"/p/{ext:re:(?:png|jpg|tar\.gz)}"),
    ("/p/<slug:s>", "/p/{s:re:[a-z0-9-]+}"),
    ("/p/<regex('[0-9]{4}'):year>", "/p/{year:re:[0-9]{4}}"),
    ("/p/<regex('.+'):rest>", "/p/{rest}"),
    ("/p/<regex('.*'):rest>", r"/p/{rest:re:[^\x2f]*}"),
    ("/p/<list:items>", "/p/{items}"),
    ("/p/<name>.json", "/p/{name}.json"),
    ("/v<int:version>/x", "/v{version:int}/x"),
    ("/a//b/<int:n>", "/a/b/{n:int}"),
]


def single_rule_app(rule: str) -> Flask:
    app = new_app()
    app.add_url_rule(rule, view_func=view("target"))
    return app


@pytest.mark.parametrize(("rule", "template"), CONVERTERS)
def test_converter_is_published_as(rule: str, template: str) -> None:
    with no_warnings():
        assert [s.template for s in flask_routes(single_rule_app(rule))] == [template]


@pytest.mark.parametrize(("rule", "template"), CONVERTERS)
def test_cross_check_converter_example_reaches_the_rule(
    rule: str, template: str, example: Callable[..., str]
) -> None:
    app = single_rule_app(rule)
    [spec] = flask_routes(app)
    assert_flask_routes_to(app, spec, example(spec.template), "localhost")


def test_number_bounds_are_dropped_with_a_warning() -> None:
    with pytest.warns(UserWarning, match=r"'/p/<int\(min=1, max=9\):n>'.*bounds"):
        specs = flask_routes(single_rule_app("/p/<int(min=1, max=9):n>"))
    assert [s.template for s in specs] == ["/p/{n:int}"]


def test_converter_matching_slashes_becomes_path_with_a_warning() -> None:
    with pytest.warns(UserWarning, match=r"'/p/<subpath:sub>/edit'.*can match '/'"):
        specs = flask_routes(single_rule_app("/p/<subpath:sub>/edit"))
    assert [s.template for s in specs] == ["/p/{sub:path}/edit"]


def test_regex_that_cannot_be_confined_to_a_segment_becomes_str_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="cannot be confined"):
        specs = flask_routes(single_rule_app("/p/<regex('a/b'):x>"))
    assert [s.template for s in specs] == ["/p/{x}"]


def test_literal_brace_in_a_rule_is_a_template_error_unless_excluded_by_name() -> None:
    app = single_rule_app("/weird/{x}")
    with pytest.raises(TemplateError, match=re.escape("'/weird/{x}'")):
        flask_routes(app)
    assert flask_routes(app, exclude=["target"]) == []


# --------------------------------------------------------------------------- methods and marks


def test_methods_are_werkzeugs_with_automatic_head_and_options() -> None:
    app = new_app()
    app.add_url_rule("/r", view_func=view("r"), methods=["GET", "post"])
    app.add_url_rule("/no-options", view_func=view("n"), provide_automatic_options=False)
    app.url_map.add(Rule("/any", endpoint="any"))
    app.view_functions["any"] = view("any")
    methods = {s.template: s.methods for s in flask_routes(app)}
    assert methods == {
        "/r": ("GET", "HEAD", "OPTIONS", "POST"),
        "/no-options": ("GET", "HEAD"),
        "/any": ("*",),
    }


def test_marks_on_a_method_view_class_apply_to_every_method() -> None:
    @meshware.public
    class Public(MethodView):
        def get(self) -> str:
            return "p"

        @meshware.policy(retries=0)
        def post(self) -> str:
            return "p"

    app = new_app()
    app.add_url_rule("/p", view_func=Public.as_view("p"))
    assert flask_routes(app) == [
        RouteSpec("/p", ("GET", "HEAD", "OPTIONS"), name="p", public=True),
        RouteSpec("/p", ("POST",), name="p", public=True, retries=0),
    ]


def test_excluded_method_view_class_is_not_published() -> None:
    @meshware.exclude
    class Hidden(MethodView):
        def get(self) -> str:
            return "h"

    app = new_app()
    app.add_url_rule("/h", view_func=Hidden.as_view("h"))
    assert flask_routes(app) == []


def test_include_and_exclude_patterns_match_templates_and_endpoints() -> None:
    app = build_app()
    names = [s.name for s in flask_routes(app, include=["/users*", "api.*"], exclude=["*.order"])]
    assert names == ["user", "create_user", "avatar", "api.health"]


# --------------------------------------------------------------------------- hosts


def build_host_app() -> Flask:
    app = new_app(host_matching=True, static_host="static.example.com")
    app.add_url_rule("/", view_func=view("tenant_home"), host="<tenant>.example.com")
    app.add_url_rule("/status", view_func=view("api_status"), host="api.example.com")
    app.add_url_rule(
        "/v<int:version>", view_func=view("region"), host="<region>.<int:n>.example.com"
    )
    return app


def test_host_matching_publishes_each_rules_host() -> None:
    with no_warnings():
        specs = flask_routes(build_host_app(), include_static=True)
    assert specs == [
        RouteSpec("/static/{filename:path}", GET, name="static", host="static.example.com"),
        RouteSpec("/", GET, name="tenant_home", host="{tenant}.example.com"),
        RouteSpec("/status", GET, name="api_status", host="api.example.com"),
        RouteSpec("/v{version:int}", GET, name="region", host="{region}.{n:int}.example.com"),
    ]


def test_rule_without_host_under_host_matching_is_left_out_with_a_warning() -> None:
    app = build_host_app()
    app.add_url_rule("/nowhere", view_func=view("nowhere"))
    with pytest.warns(UserWarning, match="'/nowhere'.*host_matching"):
        names = [s.name for s in flask_routes(app)]
    assert "nowhere" not in names


def build_subdomain_app() -> Flask:
    app = new_app(subdomain_matching=True)
    app.config["SERVER_NAME"] = "Example.com"
    app.add_url_rule("/", view_func=view("home"))
    app.add_url_rule("/", view_func=view("tenant"), subdomain="<tenant>")
    admin = Blueprint("admin", __name__, subdomain="admin")
    admin.add_url_rule("/users", view_func=view("users"))
    app.register_blueprint(admin)
    return app


def test_subdomains_are_published_relative_to_server_name() -> None:
    assert flask_routes(build_subdomain_app()) == [
        RouteSpec("/", GET, name="home", host="example.com"),
        RouteSpec("/", GET, name="tenant", host="{tenant}.example.com"),
        RouteSpec("/users", GET, name="admin.users", host="admin.example.com"),
    ]


def test_subdomain_rule_is_unreachable_when_subdomain_matching_is_off() -> None:
    app = new_app()
    app.config["SERVER_NAME"] = "example.com"
    app.add_url_rule("/a", view_func=view("a"), subdomain="api")
    app.add_url_rule("/b", view_func=view("b"))
    with pytest.warns(UserWarning, match="'/a'.*subdomain_matching is off"):
        specs = flask_routes(app)
    assert specs == [RouteSpec("/b", GET, name="b")]


@pytest.mark.parametrize("build", [build_host_app, build_subdomain_app])
def test_cross_check_hosts_reach_the_published_rule(
    build: Callable[[], Flask], example: Callable[..., str]
) -> None:
    app = build()
    for spec in flask_routes(app, include_static=True):
        assert spec.host is not None
        host = example(spec.host, host=True)
        assert_flask_routes_to(app, spec, example(spec.template), host)
