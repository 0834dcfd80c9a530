"""Running the function locally the way ``sam local invoke`` does, without Docker.

* :func:`invoke` reads the function's handler and environment from ``template.yaml`` (Globals merged,
  parameter defaults resolved, SAM's ``--env-vars`` JSON applied on top), sets them, imports the handler and
  calls it with the event and a Lambda-like context.
* :func:`provision` creates the buckets, queues and tables the template declares on any S3/SQS/DynamoDB
  endpoint (moto, LocalStack): key schemas, TTL, versioning and the redrive policy come from the template,
  physical names from the caller.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sceneclip.aws.context import LocalContext
from sceneclip.errors import ConfigError


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation short-form tags (!Ref, !Sub, ...) as {'Fn::X': value} dicts."""


def _cfn_tag(loader: yaml.Loader, tag_suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if tag_suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: str | Path = "template.yaml") -> dict[str, Any]:
    """Read a SAM/CloudFormation template, keeping intrinsic functions (``!Ref``, ``!Sub``…) as tagged dicts."""
    try:
        with open(path) as fh:
            return yaml.load(fh, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    except FileNotFoundError as exc:
        raise ConfigError(f"template {path} not found (run from the project folder or pass --template)") from exc


@dataclass
class Resolver:
    """Resolves the intrinsic functions that matter for environment variables; resources map to names."""

    parameters: dict[str, Any]
    physical: dict[str, str] = field(default_factory=dict)
    region: str = "us-east-1"
    account: str = "123456789012"

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            (fn, arg), = value.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::Sub":
                return self.sub(arg)
            if fn == "Fn::GetAtt":
                return self.physical.get(".".join(arg), self.physical.get(arg[0], f"<{'.'.join(arg)}>"))
            if fn == "Fn::If":
                return self(arg[1])
            if fn == "Fn::Join":
                return str(arg[0]).join(str(self(v)) for v in arg[1])
            if fn == "Fn::Select":
                return self(arg[1])[int(arg[0])]
            if fn == "Fn::Split":
                return str(self(arg[1])).split(arg[0])
        if isinstance(value, list):
            return [self(v) for v in value]
        return value

    def ref(self, name: str) -> Any:
        """Resolve ``!Ref``: a parameter's value or a resource's physical name."""
        pseudo = {"AWS::Region": self.region, "AWS::AccountId": self.account, "AWS::Partition": "aws",
                  "AWS::StackName": "sceneclip-local", "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{self.account}:stack/sceneclip-local/local",
                  "AWS::NoValue": None}
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        # A resource with no local physical name stays unresolved: the variable is then left unset, so the
        # handler fails naming it instead of using a made-up bucket name.
        return self.physical.get(name, f"<{name}>")

    def sub(self, arg: Any) -> str:
        """Resolve ``!Sub`` with parameters, physical names and pseudo-parameters."""
        import re

        template, extra = (arg, {}) if isinstance(arg, str) else (arg[0], {k: self(v) for k, v in arg[1].items()})

        def repl(m: re.Match[str]) -> str:
            key = m.group(1)
            if key in extra:
                return str(extra[key])
            if "." in key:
                return str(self({"Fn::GetAtt": key.split(".", 1)}))
            return str(self.ref(key))

        return re.sub(r"\$\{([^}!]+)\}", repl, template)


def parameter_defaults(template: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The template's parameter defaults, with ``overrides`` on top."""
    params = {k: v.get("Default") for k, v in (template.get("Parameters") or {}).items()}
    params.update(overrides or {})
    return params


@dataclass(frozen=True)
class FunctionSpec:
    """What `sceneclip invoke` needs of one function: handler, environment, timeout and memory."""
    logical_id: str
    handler: str
    environment: dict[str, str]
    timeout_s: int
    memory_mb: int


def function_spec(template: Mapping[str, Any], logical_id: str, resolver: Resolver) -> FunctionSpec:
    """The :class:`FunctionSpec` of ``logical_id``, Globals merged and intrinsics resolved."""
    resources = template.get("Resources") or {}
    res = resources.get(logical_id)
    if not res or res.get("Type") != "AWS::Serverless::Function":
        functions = [k for k, v in resources.items() if v.get("Type") == "AWS::Serverless::Function"]
        raise ConfigError(f"{logical_id!r} is not a function in the template; functions: {functions}")
    glob = (template.get("Globals") or {}).get("Function") or {}
    props = {**glob, **(res.get("Properties") or {})}
    env = {
        **((glob.get("Environment") or {}).get("Variables") or {}),
        **(((res.get("Properties") or {}).get("Environment") or {}).get("Variables") or {}),
    }
    resolved = {k: resolver(v) for k, v in env.items()}
    return FunctionSpec(
        logical_id=logical_id,
        handler=str(resolver(props.get("Handler"))),
        environment={k: "" if v is None else str(v) for k, v in resolved.items()},
        timeout_s=int(resolver(props.get("Timeout", 3)) or 3),
        memory_mb=int(resolver(props.get("MemorySize", 128)) or 128),
    )


def read_env_vars(path: str | None, logical_id: str) -> dict[str, str]:
    """SAM's --env-vars format: {"<LogicalId>": {...}, "Parameters": {... applies to all functions}}."""
    if not path:
        return {}
    with open(path) as fh:
        data = json.load(fh)
    shared = data.get("Parameters") or {}
    specific = data.get(logical_id) or {}
    return {k: str(v) for k, v in {**shared, **specific}.items()}


def invoke(
    logical_id: str,
    event: dict[str, Any],
    *,
    template_path: str | Path = "template.yaml",
    env_vars: str | None = None,
    parameter_overrides: Mapping[str, Any] | None = None,
) -> Any:
    """Call the function's handler in this process with the template's environment (+ env-vars file)."""
    template = load_template(template_path)
    resolver = Resolver(parameter_defaults(template, parameter_overrides))
    spec = function_spec(template, logical_id, resolver)
    overrides = read_env_vars(env_vars, logical_id)
    env = {**spec.environment, **overrides}
    unresolved = [k for k, v in env.items() if v.startswith("<") or v == ""]
    for name in unresolved:
        if name in overrides:
            continue
        env.pop(name)  # left unset, as an empty CloudFormation value would be
    os.environ.update(env)
    os.environ.setdefault("AWS_LAMBDA_FUNCTION_NAME", logical_id)
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    module_name, func_name = spec.handler.rsplit(".", 1)
    module = importlib.import_module(module_name)
    context = LocalContext(function_name=logical_id, memory_limit_in_mb=spec.memory_mb, timeout_s=spec.timeout_s)
    # As with `sam local invoke`: the function's logs and EMF metrics go to stderr, the response to stdout.
    with _stdout_to_stderr():
        return getattr(module, func_name)(event, context)


@contextlib.contextmanager
def _stdout_to_stderr() -> Any:
    moved = []
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for h in getattr(logger, "handlers", []):
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is sys.stdout:
                h.setStream(sys.stderr)
                moved.append(h)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for h in moved:
            h.setStream(sys.stdout)


# --- sample events ------------------------------------------------------------------------------------------
def retarget_event(
    event: Any, heads: Mapping[str, Mapping[str, Any]], *, key: str | None = None
) -> Any:
    """Point a sample event (events/*.json) at real uploaded objects, in place; returns the event.

    Every S3 object entry — in an S3 notification, an EventBridge event, or nested in an SQS body or SNS
    message — gets the version id, ETag and size of ``heads[key]`` (``head_object`` responses). With
    ``key`` every entry is renamed to it first (URL-encoded where S3 notifications encode keys).
    """
    from urllib.parse import quote_plus

    def fix(obj: Any, in_notification: bool = False) -> Any:
        if isinstance(obj, dict):
            entry = obj.get("object")
            if isinstance(entry, dict) and "key" in entry:
                notification = in_notification or "s3SchemaVersion" in obj
                if key is not None:
                    entry["key"] = quote_plus(key, safe="/") if notification else key
                name = key if key is not None else entry["key"]
                head = heads.get(name)
                if head is not None:
                    if head.get("VersionId"):
                        entry["version-id" if "version-id" in entry else "versionId"] = head["VersionId"]
                    if head.get("ETag"):
                        entry["eTag" if "eTag" in entry else "etag"] = str(head["ETag"]).strip('"')
                    if head.get("ContentLength") is not None:
                        entry["size"] = head["ContentLength"]
                    else:
                        entry.pop("size", None)
            for k, v in list(obj.items()):
                if k in ("body", "Message") and isinstance(v, str) and v.lstrip().startswith("{"):
                    obj[k] = json.dumps(fix(json.loads(v)))
                else:
                    fix(v, in_notification)
        elif isinstance(obj, list):
            for v in obj:
                fix(v, in_notification)
        return obj

    return fix(event)


# --- provisioning on a local endpoint -----------------------------------------------------------------------
def provision(template: Mapping[str, Any], names: Mapping[str, str], *, parameters: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Create the template's buckets, queues and tables under ``names`` (logical id → physical name).

    Returns logical id → physical identifier (queue URL for queues). Resources not named are skipped.
    """
    import boto3

    resolver = Resolver(parameter_defaults(template, parameters))
    resources = template.get("Resources") or {}
    s3, sqs, ddb = boto3.client("s3"), boto3.client("sqs"), boto3.client("dynamodb")
    created: dict[str, str] = {}
    order = sorted(names, key=lambda lid: 0 if "RedrivePolicy" not in (resources.get(lid, {}).get("Properties") or {}) else 1)
    for lid in order:
        res = resources.get(lid)
        if res is None:
            raise ConfigError(f"{lid} is not a resource of the template")
        props = res.get("Properties") or {}
        name = names[lid]
        if res["Type"] == "AWS::S3::Bucket":
            s3.create_bucket(Bucket=name)
            if (props.get("VersioningConfiguration") or {}).get("Status") == "Enabled":
                s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
            created[lid] = name
        elif res["Type"] == "AWS::SQS::Queue":
            attrs = {}
            if "VisibilityTimeout" in props:
                vt = props["VisibilityTimeout"]
                attrs["VisibilityTimeout"] = str(vt if isinstance(vt, int) else 30)
            redrive = props.get("RedrivePolicy")
            if redrive:
                target = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
                dlq_url = created[target]
                dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
                attrs["RedrivePolicy"] = json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(resolver(redrive["maxReceiveCount"]))}
                )
            created[lid] = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
        elif res["Type"] == "AWS::DynamoDB::Table":
            ddb.create_table(
                TableName=name,
                AttributeDefinitions=props["AttributeDefinitions"],
                KeySchema=props["KeySchema"],
                BillingMode="PAY_PER_REQUEST",
            )
            ttl = props.get("TimeToLiveSpecification")
            if ttl and ttl.get("Enabled"):
                ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]})
            created[lid] = name
        else:
            raise ConfigError(f"cannot provision {lid} of type {res['Type']} locally")
    return created
