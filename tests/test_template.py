"""template.yaml: the linters pass, and the properties we rely on are really in the template.

The linters run from the tools virtualenv (``SCENECLIP_TOOLS_BIN``, set by ``make test``; else
``.venv-tools/bin``). The structural checks read the YAML with a small loader that understands CloudFormation
tags and evaluate ``Ref``/``Fn::If``/``Fn::FindInMap`` for given parameters, so each trigger mode can be
checked as it would deploy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"


# --- tools --------------------------------------------------------------------------------------------------
def _tool(name: str) -> str | None:
    candidates = []
    if os.environ.get("SCENECLIP_TOOLS_BIN"):
        candidates.append(Path(os.environ["SCENECLIP_TOOLS_BIN"]) / name)
    candidates.append(ROOT / ".venv-tools" / "bin" / name)
    if name == "cfn-lint":
        candidates.append(Path(sys.executable).parent / name)  # the main venv has cfn-lint too
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which(name)


def _run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "SAM_CLI_TELEMETRY": "0", **env}
    return subprocess.run(argv, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300)


def _require(name: str) -> str:
    path = _tool(name)
    if path is None:
        pytest.skip(f"{name} not found (run `make tools`, or set SCENECLIP_TOOLS_BIN)")
    return path


def test_cfn_lint() -> None:
    result = _run([_require("cfn-lint"), str(TEMPLATE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_validate_lint() -> None:
    result = _run([_require("sam"), "validate", "--lint", "--template-file", str(TEMPLATE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid SAM Template" in result.stdout + result.stderr


def test_sam_validate() -> None:
    """Plain validate runs the SAM translator (needs a region); it is what rejects e.g. foreign S3 buckets."""
    result = _run([_require("sam"), "validate", "--template-file", str(TEMPLATE)], AWS_DEFAULT_REGION="us-east-1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid SAM Template" in result.stdout + result.stderr


# --- loading and evaluating ---------------------------------------------------------------------------------
class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns ``!Ref x`` into ``{"Ref": "x"}`` and ``!Foo y`` into ``{"Fn::Foo": y}``."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


_NO_VALUE = object()


class Stack:
    """The template as it deploys with some parameters: conditions decided, Fn::If and Ref resolved."""

    def __init__(self, template: dict[str, Any], **overrides: Any) -> None:
        self.template = template
        self.params = {name: spec.get("Default") for name, spec in template["Parameters"].items()}
        self.params.update(overrides)
        self.conditions: dict[str, Any] = {}
        for name, expr in template.get("Conditions", {}).items():  # in order: a condition may use earlier ones
            self.conditions[name] = self.resolve(expr)
        self.resources = {
            name: self.resolve(res)
            for name, res in template["Resources"].items()
            if "Condition" not in res or self.conditions[res["Condition"]]
        }

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.resolve(item) for item in node]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Ref":
                if arg == "AWS::NoValue":
                    return _NO_VALUE
                if arg in self.params:
                    return self.params[arg]
                return node  # a resource or pseudo parameter: leave symbolic
            if fn == "Condition":
                return self.conditions[arg]
            if fn == "Fn::Equals":
                a, b = (self.resolve(x) for x in arg)
                return str(a) == str(b)
            if fn == "Fn::Not":
                return not self.resolve(arg[0])
            if fn == "Fn::Or":
                return any(self.resolve(x) for x in arg)
            if fn == "Fn::And":
                return all(self.resolve(x) for x in arg)
            if fn == "Fn::If":
                name, when_true, when_false = arg
                return self.resolve(when_true if self.conditions[name] else when_false)
            if fn == "Fn::Sub" and isinstance(arg, str):  # parameters only; anything else stays symbolic
                import re

                names = re.findall(r"\$\{([^}]+)\}", arg)
                if all(n in self.params for n in names):
                    return re.sub(r"\$\{([^}]+)\}", lambda m: str(self.params[m.group(1)]), arg)
            if fn == "Fn::Sub" and isinstance(arg, list):  # [text, variables]: when every name resolves to text
                import re

                text, variables = arg
                values = {**self.params, **{k: self.resolve(v) for k, v in variables.items()}}
                names = re.findall(r"\$\{([^}]+)\}", text)
                if all(isinstance(values.get(n), str) for n in names):
                    return re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], text)
            if fn == "Fn::Join":
                items = self.resolve(arg[1])
                if isinstance(items, list) and all(isinstance(i, str) for i in items):
                    return arg[0].join(items)
            if fn == "Fn::Split":
                text = self.resolve(arg[1])
                if isinstance(text, str):
                    return text.split(arg[0])
            if fn == "Fn::Select":
                items = self.resolve(arg[1])
                if isinstance(items, list):
                    return items[int(arg[0])]
            if fn == "Fn::FindInMap":
                mapping, top, second = (self.resolve(x) for x in arg)
                return self.template["Mappings"][mapping][str(top)][second]
        out = {key: self.resolve(value) for key, value in node.items()}
        return {key: value for key, value in out.items() if value is not _NO_VALUE}

    def props(self, name: str) -> dict[str, Any]:
        return self.resources[name]["Properties"]


def _of_type(stack: Stack, type_: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in stack.resources.items() if res["Type"] == type_}


# --- queues -------------------------------------------------------------------------------------------------
def test_visibility_timeout_at_least_six_times_function_timeout_by_default(template: dict[str, Any]) -> None:
    stack = Stack(template)
    timeout = int(stack.props("ClipFunction")["Timeout"])
    visibility = int(stack.props("WorkQueue")["VisibilityTimeout"])
    assert timeout == 300
    assert visibility >= 6 * timeout


@pytest.mark.parametrize("timeout", [60, 120, 180, 300, 450, 600, 900])
def test_visibility_timeout_follows_every_allowed_timeout(template: dict[str, Any], timeout: int) -> None:
    assert template["Parameters"]["Timeout"]["AllowedValues"] == [60, 120, 180, 300, 450, 600, 900]
    stack = Stack(template, Timeout=timeout)
    visibility = int(stack.props("WorkQueue")["VisibilityTimeout"])
    max_window = template["Parameters"]["BatchingWindow"]["MaxValue"]
    assert visibility >= 6 * timeout + max_window
    assert visibility <= 43200  # SQS maximum


def test_dead_letter_queue_redrive(template: dict[str, Any]) -> None:
    stack = Stack(template)
    redrive = stack.props("WorkQueue")["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert redrive["maxReceiveCount"] == 3
    assert Stack(template, MaxReceiveCount=7).props("WorkQueue")["RedrivePolicy"]["maxReceiveCount"] == 7
    # A standard queue keeps the original enqueue time: the DLQ must keep messages longer than the source.
    assert stack.props("DeadLetterQueue")["MessageRetentionPeriod"] > stack.props("WorkQueue")["MessageRetentionPeriod"]


def test_sqs_event_source(template: dict[str, Any]) -> None:
    events = Stack(template).props("ClipFunction")["Events"]
    sqs = [e["Properties"] for e in events.values() if e["Type"] == "SQS"]
    assert len(sqs) == 1
    (props,) = sqs
    assert props["Queue"] == {"Fn::GetAtt": ["WorkQueue", "Arn"]}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BatchSize"] == 1
    assert props["MaximumBatchingWindowInSeconds"] == 0
    assert props["ScalingConfig"]["MaximumConcurrency"] == 10
    assert template["Parameters"]["MaximumConcurrency"]["MinValue"] == 2  # Lambda's minimum


# --- trigger modes ------------------------------------------------------------------------------------------
def _active_paths(stack: Stack) -> set[str]:
    notification = stack.props("InputBucket")["NotificationConfiguration"]
    paths = set()
    if notification.get("LambdaConfigurations"):
        paths.add("s3")
    if notification.get("QueueConfigurations"):
        paths.add("sqs")
    rules = _of_type(stack, "AWS::Events::Rule")
    if rules:
        assert notification.get("EventBridgeConfiguration") == {"EventBridgeEnabled": True}
        paths.add("eventbridge")
    return paths


@pytest.mark.parametrize("mode", ["s3", "eventbridge", "sqs"])
def test_exactly_one_upload_path_per_trigger_mode(template: dict[str, Any], mode: str) -> None:
    stack = Stack(template, TriggerMode=mode)
    assert _active_paths(stack) == {mode}
    assert "WorkQueue" in stack.resources  # backfills always have a queue


def test_trigger_mode_parameter(template: dict[str, Any]) -> None:
    assert template["Parameters"]["TriggerMode"]["AllowedValues"] == ["s3", "eventbridge", "sqs"]


@pytest.mark.parametrize("mode, key", [("s3", "LambdaConfigurations"), ("sqs", "QueueConfigurations")])
def test_s3_notifications_filter_tif_and_tiff(template: dict[str, Any], mode: str, key: str) -> None:
    configs = Stack(template, TriggerMode=mode).props("InputBucket")["NotificationConfiguration"][key]
    suffixes = sorted(r["Value"] for c in configs for r in c["Filter"]["S3Key"]["Rules"] if r["Name"] == "suffix")
    assert suffixes == [".tif", ".tiff"]
    assert all(c["Event"] == "s3:ObjectCreated:*" for c in configs)
    assert not any(r["Name"] == "prefix" for c in configs for r in c["Filter"]["S3Key"]["Rules"])
    with_prefix = Stack(template, TriggerMode=mode, InputPrefix="scenes/")
    configs = with_prefix.props("InputBucket")["NotificationConfiguration"][key]
    assert all({"Name": "prefix", "Value": "scenes/"} in c["Filter"]["S3Key"]["Rules"] for c in configs)


def test_eventbridge_rule_pattern(template: dict[str, Any]) -> None:
    stack = Stack(template, TriggerMode="eventbridge", InputPrefix="scenes/")
    (rule,) = _of_type(stack, "AWS::Events::Rule").values()
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.s3"] and pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["bucket"]["name"] == [{"Ref": "InputBucket"}]
    assert pattern["detail"]["object"]["key"] == [
        {"wildcard": "scenes/*.tif"},  # Fn::Sub over parameters is evaluated
        {"wildcard": "scenes/*.tiff"},
    ]
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Ref": "ClipFunction.Alias"}
    assert "EventBridgeInvokePermission" in stack.resources


# --- SnapStart (issue 13): every trigger invokes the published alias; SnapStart is a parameter ---------------
def _function_refs(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every place a resource property names ClipFunction (Ref or GetAtt), with where it is."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        ref, att = node.get("Ref"), node.get("Fn::GetAtt")
        if (isinstance(ref, str) and ref.startswith("ClipFunction")) or (isinstance(att, list) and att[0] == "ClipFunction"):
            found.append((path, node))
        for key, value in node.items():
            found += _function_refs(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _function_refs(value, f"{path}/{i}")
    return found


@pytest.mark.parametrize("mode", ["s3", "eventbridge", "sqs"])
def test_every_trigger_invokes_the_published_alias(template: dict[str, Any], mode: str) -> None:
    stack = Stack(template, TriggerMode=mode)
    refs = [(where, ref) for name, res in stack.resources.items() if name != "ClipFunctionRole"
            for where, ref in _function_refs(res, name) if not ref.get("Ref", "").startswith("ClipFunctionRole")]
    assert refs, "no trigger names the function"
    assert all(ref == {"Ref": "ClipFunction.Alias"} for _, ref in refs), refs  # never $LATEST
    assert stack.props("ClipFunction")["AutoPublishAlias"] == "live"


@pytest.mark.parametrize("value, apply_on", [("false", "None"), ("true", "PublishedVersions")])
def test_snapstart_parameter(template: dict[str, Any], value: str, apply_on: str) -> None:
    stack = Stack(template, SnapStart=value, EphemeralStorage=512)
    assert stack.props("ClipFunction")["SnapStart"] == {"ApplyOn": apply_on}
    assert template["Parameters"]["SnapStart"]["Default"] == "false"  # it costs money: opt in


def test_snapstart_rule_requires_lambdas_ephemeral_storage_limit(template: dict[str, Any]) -> None:
    rule = template["Rules"]["SnapStartLimits"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "SnapStart"}, "true"]}
    (assertion,) = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Equals": [{"Ref": "EphemeralStorage"}, "512"]}
    assert "512" in assertion["AssertDescription"]


def test_linters_pass_with_snapstart_on(tmp_path: Path) -> None:
    text = TEMPLATE.read_text()
    markers = [("  SnapStart:\n    Type: String\n    Default: \"false\"\n", '"false"', '"true"'),
               ("  EphemeralStorage:\n    Type: Number\n    Default: 2048\n", "2048", "512")]
    for marker, old, new in markers:
        assert marker in text
        text = text.replace(marker, marker.replace(f"Default: {old}", f"Default: {new}"))
    copy = tmp_path / "template.yaml"
    copy.write_text(text)
    result = _run([_require("cfn-lint"), str(copy)])
    assert result.returncode == 0, result.stdout + result.stderr
    result = _run([_require("sam"), "validate", "--lint", "--template-file", str(copy)])
    assert result.returncode == 0 and "valid SAM Template" in result.stdout + result.stderr, result.stdout + result.stderr


# --- function -----------------------------------------------------------------------------------------------
ENV_VARS = {
    "SCENECLIP_OUTPUT_BUCKET", "SCENECLIP_OUTPUT_PREFIX", "SCENECLIP_BOUNDARIES", "SCENECLIP_REGION_PATTERN",
    "SCENECLIP_RECORDS_TABLE", "SCENECLIP_IDEMPOTENCY_TABLE", "SCENECLIP_ALL_TOUCHED",
    "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL", "SCENECLIP_COMPLETION_TARGET",
}


def test_function_environment(template: dict[str, Any]) -> None:
    env = Stack(template).props("ClipFunction")["Environment"]["Variables"]
    assert ENV_VARS <= set(env)
    assert env["POWERTOOLS_SERVICE_NAME"] == "sceneclip"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "sceneclip"
    assert env["SCENECLIP_OUTPUT_PREFIX"] == "clipped/"
    assert env["SCENECLIP_OUTPUT_BUCKET"] == {"Ref": "OutputBucket"}
    assert env["SCENECLIP_RECORDS_TABLE"] == {"Ref": "RecordsTable"}
    assert env["SCENECLIP_IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}


def test_function_basics(template: dict[str, Any]) -> None:
    props = Stack(template).props("ClipFunction")
    assert props["Handler"] == "sceneclip.aws.handler.lambda_handler"
    assert props["CodeUri"] == "src/"
    assert props["Runtime"] == "python3.12"
    assert props["Tracing"] == "Active"
    assert props["Architectures"] == ["x86_64"]
    powertools, geo = props["Layers"]
    assert "017000801446:layer:AWSLambdaPowertoolsPythonV3-python312-${Architecture}:${PowertoolsLayerVersion}" in (
        powertools["Fn::Sub"]
    )
    assert geo == {"Ref": "GeoLayer"}  # after Powertools: later layers win in /opt
    layer = Stack(template).props("GeoLayer")
    assert layer["ContentUri"] == "layers/geo/" and layer["CompatibleRuntimes"] == ["python3.12"]
    assert Stack(template, Architecture="arm64").props("ClipFunction")["Architectures"] == ["arm64"]


@pytest.mark.parametrize("value, expected", [(-1, None), (0, None), (5, 5)])
def test_reserved_concurrency_unset_for_minus_one_and_zero(template: dict[str, Any], value: int, expected: Any) -> None:
    props = Stack(template, ReservedConcurrency=value).props("ClipFunction")
    assert props.get("ReservedConcurrentExecutions") == expected


def test_required_parameters(template: dict[str, Any]) -> None:
    required = {
        "MemorySize", "Timeout", "EphemeralStorage", "RegionPattern", "BoundaryStore", "AllTouched", "OutputPrefix",
        "InputPrefix", "Architecture", "PowertoolsLayerVersion", "BatchSize", "BatchingWindow", "MaximumConcurrency",
        "ReservedConcurrency", "MaxReceiveCount", "LogLevel", "TriggerMode", "CompletionTarget",
    }
    assert required <= set(template["Parameters"])
    assert template["Parameters"]["OutputPrefix"]["Default"] == "clipped/"


def test_outputs(template: dict[str, Any]) -> None:
    assert {
        "InputBucketName", "OutputBucketName", "WorkQueueUrl", "WorkQueueArn", "DeadLetterQueueUrl",
        "DeadLetterQueueArn", "RecordsTableName", "IdempotencyTableName",
    } <= set(template["Outputs"])


# --- storage, encryption, access ----------------------------------------------------------------------------
@pytest.mark.parametrize("bucket", ["InputBucket", "OutputBucket"])
def test_buckets_block_public_access_and_encrypt(template: dict[str, Any], bucket: str) -> None:
    props = Stack(template).props(bucket)
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True,
    }
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}


def test_output_bucket_aborts_incomplete_multipart_uploads(template: dict[str, Any]) -> None:
    rules = Stack(template).props("OutputBucket")["LifecycleConfiguration"]["Rules"]
    abort = [r for r in rules if "AbortIncompleteMultipartUpload" in r]
    assert abort and abort[0]["Status"] == "Enabled"
    assert abort[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 1


def test_input_bucket_is_versioned(template: dict[str, Any]) -> None:
    assert Stack(template).props("InputBucket")["VersioningConfiguration"] == {"Status": "Enabled"}


def test_buckets_are_separate(template: dict[str, Any]) -> None:
    stack = Stack(template)
    assert stack.props("InputBucket")["BucketName"] != stack.props("OutputBucket")["BucketName"]


def test_tables(template: dict[str, Any]) -> None:
    stack = Stack(template)
    records = stack.props("RecordsTable")
    assert records["BillingMode"] == "PAY_PER_REQUEST"
    assert records["KeySchema"] == [
        {"AttributeName": "scene", "KeyType": "HASH"}, {"AttributeName": "region", "KeyType": "RANGE"},
    ]
    assert {"AttributeName": "scene", "AttributeType": "S"} in records["AttributeDefinitions"]
    assert {"AttributeName": "region", "AttributeType": "S"} in records["AttributeDefinitions"]
    idem = stack.props("IdempotencyTable")
    assert idem["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert idem["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    for table in (records, idem):
        assert table["SSESpecification"]["SSEEnabled"] is True


def test_queues_encrypted(template: dict[str, Any]) -> None:
    for queue in _of_type(Stack(template), "AWS::SQS::Queue").values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True


def _statements(stack: Stack) -> list[dict[str, Any]]:
    role = stack.props("ClipFunctionRole")
    return [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else actions


def test_least_privilege_role(template: dict[str, Any]) -> None:
    stack = Stack(template)
    props = stack.props("ClipFunction")
    # An explicit role: SAM's generated one would attach AWSLambdaSQSQueueExecutionRole (Resource "*").
    assert props["Role"] == {"Fn::GetAtt": ["ClipFunctionRole", "Arn"]}
    assert "Policies" not in props
    statements = _statements(stack)
    for s in statements:
        assert s["Effect"] == "Allow"
        assert not any(a.endswith(":*") or a == "*" for a in _actions(s)), s
        if s["Resource"] == "*":
            assert all(a.startswith("xray:") for a in _actions(s)), s
    granted = {a for s in statements for a in _actions(s)}
    assert {"s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "dynamodb:PutItem", "sqs:ReceiveMessage",
            "sqs:DeleteMessage"} <= granted
    assert "s3:DeleteObject" not in granted
    writes = [s for s in statements if "s3:PutObject" in _actions(s)]
    assert writes == [s for s in writes if s["Resource"] == {"Fn::Sub": "${OutputBucket.Arn}/${OutputPrefix}*"}]
    reads = [s for s in statements if "s3:GetObjectVersion" in _actions(s)]
    assert len(reads) == 1 and "sceneclip-in-" in reads[0]["Resource"]["Fn::Sub"][0]


def test_input_bucket_name_matches_the_constructed_arns(template: dict[str, Any]) -> None:
    """Permissions name the input bucket by a constructed ARN (GetAtt would be a cycle): keep them in step."""
    stack = Stack(template)
    name = stack.props("InputBucket")["BucketName"]["Fn::Sub"]
    assert name[0] == "sceneclip-in-${StackUuid}"
    source_arn = stack.props("S3InvokePermission")["SourceArn"]["Fn::Sub"]
    assert source_arn[0].endswith(":s3:::" + name[0]) and source_arn[1] == name[1]
    (queue_statement,) = [
        s for s in stack.props("WorkQueuePolicy")["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"
    ]
    arn = queue_statement["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
    assert arn[0].endswith(":s3:::" + name[0]) and arn[1] == name[1]
    assert set(template["Resources"]["InputBucket"]["DependsOn"]) == {"S3InvokePermission", "WorkQueuePolicy"}


# --- completion events --------------------------------------------------------------------------------------
BUS = "arn:aws:events:us-east-1:123456789012:event-bus/clips"
TOPIC = "arn:aws:sns:us-east-1:123456789012:clips-ready"


def _publish_statements(stack: Stack) -> list[dict[str, Any]]:
    return [s for s in _statements(stack) if {"events:PutEvents", "sns:Publish"} & set(_actions(s))]


def test_completion_off_by_default_grants_nothing(template: dict[str, Any]) -> None:
    stack = Stack(template)
    assert template["Parameters"]["CompletionTarget"]["Default"] == ""
    assert _publish_statements(stack) == []
    assert not any(a.startswith(("events:", "sns:")) for s in _statements(stack) for a in _actions(s))
    assert stack.props("ClipFunction")["Environment"]["Variables"]["SCENECLIP_COMPLETION_TARGET"] == ""


def test_completion_to_a_bus_may_put_events_on_that_bus_only(template: dict[str, Any]) -> None:
    stack = Stack(template, CompletionTarget=BUS)
    (statement,) = _publish_statements(stack)
    assert _actions(statement) == ["events:PutEvents"] and statement["Resource"] == BUS
    assert statement["Condition"] == {"StringEquals": {"events:source": "sceneclip"}}
    assert stack.props("ClipFunction")["Environment"]["Variables"]["SCENECLIP_COMPLETION_TARGET"] == BUS


def test_completion_to_a_topic_may_publish_to_that_topic_only(template: dict[str, Any]) -> None:
    stack = Stack(template, CompletionTarget=TOPIC)
    (statement,) = _publish_statements(stack)
    assert _actions(statement) == ["sns:Publish"] and statement["Resource"] == TOPIC


@pytest.mark.parametrize("value, ok", [
    ("", True), (BUS, True), (TOPIC, True), (TOPIC + ".fifo", True),
    ("arn:aws:sqs:us-east-1:123456789012:q", False), ("clips", False), ("arn:aws:events:us-east-1:123456789012:rule/r", False),
])
def test_completion_target_pattern(template: dict[str, Any], value: str, ok: bool) -> None:
    import re

    pattern = template["Parameters"]["CompletionTarget"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, value)) is ok


@pytest.mark.parametrize("target", [BUS, TOPIC])
def test_linters_pass_with_a_completion_target(tmp_path: Path, target: str) -> None:
    """The same template deployed with the parameter set (its default replaced) still lints clean."""
    text = TEMPLATE.read_text()
    marker = "  CompletionTarget:\n    Type: String\n    Default: \"\"\n"
    assert marker in text
    copy = tmp_path / "template.yaml"
    copy.write_text(text.replace(marker, marker.replace('Default: ""', f'Default: "{target}"')))
    result = _run([_require("cfn-lint"), str(copy)])
    assert result.returncode == 0, result.stdout + result.stderr
    result = _run([_require("sam"), "validate", "--lint", "--template-file", str(copy)])
    assert result.returncode == 0 and "valid SAM Template" in result.stdout + result.stderr, result.stdout + result.stderr
# --- the boundary-store read policy (issue 9): bucket/prefix/*, never a wildcard inside the bucket name --------
def _sub_store_arn(stack: Stack, store_uri: str) -> str:
    """Evaluate the store policy's ``Fn::Sub [template, {StorePath: Select/Split}]`` as CloudFormation would."""
    import re

    (statement,) = [s for s in _statements(stack) if _actions(s) == ["s3:GetObject"]]
    if isinstance(statement["Resource"], str):  # the stack resolver already evaluated Sub/Select/Split
        return statement["Resource"]
    text, variables = statement["Resource"]["Fn::Sub"]
    values = {}
    for name, expr in variables.items():
        if isinstance(expr, str):  # the stack resolver already evaluated Select/Split
            values[name] = expr
            continue
        index, (delimiter, source) = expr["Fn::Select"][0], expr["Fn::Select"][1]["Fn::Split"]
        assert source == store_uri  # the resolver put the parameter in
        values[name] = store_uri.split(delimiter)[int(index)]
    return re.sub(r"\$\{([A-Za-z]+)\}", lambda m: values.get(m.group(1), m.group(0)), text)


@pytest.mark.parametrize(("store", "expected"), [
    ("s3://geo-store", "arn:${AWS::Partition}:s3:::geo-store/*"),
    ("s3://geo-store/boundaries/counties", "arn:${AWS::Partition}:s3:::geo-store/boundaries/counties/*"),
])
def test_store_read_policy_is_bucket_slash_prefix(template: dict[str, Any], store: str, expected: str) -> None:
    import re

    pattern = re.compile(template["Parameters"]["BoundaryStore"]["AllowedPattern"])
    assert pattern.match(store)
    arn = _sub_store_arn(Stack(template, BoundaryStore=store), store)
    assert arn == expected
    bucket = arn.split(":::", 1)[1].split("/", 1)[0]
    assert "*" not in bucket and "?" not in bucket  # a root store grants that bucket only, not geo-store-*


@pytest.mark.parametrize("store", ["s3://geo-store/", "s3://geo-store/prefix/", "s3://geo-store//x", "s3://geo*/x"])
def test_store_uris_that_would_widen_the_policy_are_refused(template: dict[str, Any], store: str) -> None:
    """A trailing slash would make ``prefix//*``; a wildcard would match other keys or buckets."""
    import re

    assert not re.compile(template["Parameters"]["BoundaryStore"]["AllowedPattern"]).match(store)


# --- checkov (issue 9): 0 failed checks; every skip in the template carries a one-line reason -----------------
def _checkov() -> str:
    """checkov from its own virtualenv (``make test`` builds it); under CI a missing checkov fails, not skips."""
    for path in (os.environ.get("SCENECLIP_CHECKOV_BIN"), str(ROOT / ".venv-checkov" / "bin" / "checkov")):
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path
    if os.environ.get("CI"):
        pytest.fail("checkov not found: `make test` builds .venv-checkov from requirements-checkov.lock")
    pytest.skip("checkov not found (run `make checkov`, or set SCENECLIP_CHECKOV_BIN)")


def test_checkov_has_no_failed_check() -> None:
    import json

    result = _run([_checkov(), "-f", str(TEMPLATE), "--framework", "cloudformation", "--skip-download",
                   "--quiet", "-o", "json"])
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0 and not failed, failed
    assert summary["passed"] > 0  # it really scanned the resources
    assert result.returncode == 0, result.stderr


def test_every_checkov_skip_has_a_one_line_reason(template: dict[str, Any]) -> None:
    skips = [(name, skip) for name, res in template["Resources"].items()
             for skip in ((res.get("Metadata") or {}).get("checkov") or {}).get("skip", [])]
    assert skips  # the optional KMS/access-log parameters are skipped with reasons, not silently
    for name, skip in skips:
        assert skip["id"].startswith("CKV_"), (name, skip)
        comment = skip.get("comment", "")
        assert comment.strip() and "\n" not in comment.strip(), (name, skip)


def test_free_protections_are_on(template: dict[str, Any]) -> None:
    stack = Stack(template)
    for queue in ("WorkQueue", "DeadLetterQueue"):
        assert stack.props(queue)["SqsManagedSseEnabled"] is True
        assert "KmsMasterKeyId" not in stack.props(queue)
    assert stack.props("RecordsTable")["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert "LoggingConfiguration" not in stack.props("InputBucket")


def test_optional_kms_key_and_access_log_bucket(template: dict[str, Any]) -> None:
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    stack = Stack(template, KmsKeyArn=key, AccessLogBucket="my-access-logs")
    for queue in ("WorkQueue", "DeadLetterQueue"):
        assert stack.props(queue)["KmsMasterKeyId"] == key and "SqsManagedSseEnabled" not in stack.props(queue)
    for table in ("RecordsTable", "IdempotencyTable"):
        assert stack.props(table)["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": key}
    assert stack.props("ClipLogGroup")["KmsKeyId"] == key
    assert stack.props("ClipFunction")["KmsKeyArn"] == key
    for bucket, prefix in (("InputBucket", "sceneclip-input/"), ("OutputBucket", "sceneclip-output/")):
        assert stack.props(bucket)["LoggingConfiguration"] == {"DestinationBucketName": "my-access-logs",
                                                               "LogFilePrefix": prefix}
    kms = [s for s in _statements(stack) if any(a.startswith("kms:") for a in _actions(s))]
    assert [s["Resource"] for s in kms] == [key]  # the function may use that key only
    assert not [s for s in _statements(Stack(template)) if any(a.startswith("kms:") for a in _actions(s))]


# --- scenes you don't own (issue 12): external source buckets and SNS topics --------------------------------
SOURCE_BUCKETS = "usgs-landsat,sentinel-cogs"
SOURCE_TOPICS = ("arn:aws:sns:us-west-2:608149789419:cirrus-es-prod-publish,"
                 "arn:aws:sns:eu-central-1:123456789012:landsat-scenes")


def _with_defaults(tmp_path: Path, **values: str) -> Path:
    """A copy of the template whose string parameters default to ``values`` (as a deploy would set them)."""
    text = TEMPLATE.read_text()
    for name, value in values.items():
        marker = f"  {name}:\n    Type: String\n    Default: \"\"\n"
        assert marker in text, name
        text = text.replace(marker, marker.replace('Default: ""', f'Default: "{value}"'))
    copy = tmp_path / "template.yaml"
    copy.write_text(text)
    return copy


def _source_reads(stack: Stack) -> list[dict[str, Any]]:
    role = stack.props("ClipFunctionRole")
    return [s for p in role["Policies"] if p["PolicyName"] == "read-source-buckets" for s in p["PolicyDocument"]["Statement"]]


def _subscriptions(stack: Stack) -> dict[str, dict[str, Any]]:
    return _of_type(stack, "AWS::SNS::Subscription")


def _topic_statements(stack: Stack) -> list[dict[str, Any]]:
    return [s for s in stack.props("WorkQueuePolicy")["PolicyDocument"]["Statement"] if s.get("Sid") == "SourceTopics"]


def test_no_source_buckets_or_topics_adds_nothing(template: dict[str, Any]) -> None:
    stack = Stack(template)
    assert _source_reads(stack) == [] and _subscriptions(stack) == {} and _topic_statements(stack) == []
    env = stack.props("ClipFunction")["Environment"]["Variables"]
    assert env["SCENECLIP_REQUESTER_PAYS"] == ""
    assert env["SCENECLIP_INPUT_BUCKETS"]["Fn::Sub"][0] == "sceneclip-in-${StackUuid}"
    reads = [s for s in _statements(stack) if "s3:GetObject" in _actions(s)]
    assert all("usgs" not in str(s["Resource"]) for s in reads)


def test_source_buckets_may_be_read_and_listed_exactly(template: dict[str, Any]) -> None:
    stack = Stack(template, SourceBuckets=SOURCE_BUCKETS, RequesterPays="usgs-landsat")
    get, listing = _source_reads(stack)
    assert _actions(get) == ["s3:GetObject"]
    assert get["Resource"] == ["arn:aws:s3:::usgs-landsat/*", "arn:aws:s3:::sentinel-cogs/*"]
    assert _actions(listing) == ["s3:ListBucket"]
    assert listing["Resource"] == ["arn:aws:s3:::usgs-landsat", "arn:aws:s3:::sentinel-cogs"]
    env = stack.props("ClipFunction")["Environment"]["Variables"]
    assert env["SCENECLIP_INPUT_BUCKETS"]["Fn::Sub"][0] == "sceneclip-in-${StackUuid},${SourceBuckets}"
    assert env["SCENECLIP_REQUESTER_PAYS"] == "usgs-landsat"
    assert _subscriptions(stack) == {}


def test_source_topics_subscribe_the_work_queue_and_only_they_may_send(template: dict[str, Any]) -> None:
    stack = Stack(template, SourceTopics=SOURCE_TOPICS)
    topics = SOURCE_TOPICS.split(",")
    subs = _subscriptions(stack)
    assert sorted(subs) == ["SourceTopicSubscription1", "SourceTopicSubscription2"]
    for name, topic in zip(sorted(subs), topics):
        props = subs[name]["Properties"]
        assert props["TopicArn"] == topic and props["Region"] == topic.split(":")[3]
        assert props["Protocol"] == "sqs" and props["Endpoint"] == {"Fn::GetAtt": ["WorkQueue", "Arn"]}
        assert "RawMessageDelivery" not in props  # SNS envelopes: the SQS handler unwraps them
    (statement,) = _topic_statements(stack)
    assert statement["Principal"] == {"Service": "sns.amazonaws.com"} and _actions(statement) == ["sqs:SendMessage"]
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": topics}}
    assert _source_reads(stack) == []


@pytest.mark.parametrize("value, ok", [
    ("", True), ("usgs-landsat", True), (SOURCE_BUCKETS, True), ("a.b-c", True),
    ("usgs-*", False), ("arn:aws:s3:::usgs-landsat", False), ("usgs-landsat, sentinel-cogs", False),
    ("usgs-landsat,", False), ("Usgs", False),
])
def test_source_buckets_pattern(template: dict[str, Any], value: str, ok: bool) -> None:
    import re

    assert bool(re.fullmatch(template["Parameters"]["SourceBuckets"]["AllowedPattern"], value)) is ok


@pytest.mark.parametrize("value, ok", [
    ("", True), (SOURCE_TOPICS, True), (",".join([TOPIC] * 5), True), (",".join([TOPIC] * 6), False),
    (TOPIC + ".fifo", False), ("arn:aws:sqs:us-east-1:123456789012:q", False), ("arn:aws:sns:*:123456789012:t", False),
])
def test_source_topics_pattern(template: dict[str, Any], value: str, ok: bool) -> None:
    import re

    assert bool(re.fullmatch(template["Parameters"]["SourceTopics"]["AllowedPattern"], value)) is ok


@pytest.mark.parametrize("value, ok", [("", True), ("true", True), ("false", True), ("usgs-landsat,b.c", True),
                                       ("yes please", False), ("usgs-*", False)])
def test_requester_pays_parameter_pattern(template: dict[str, Any], value: str, ok: bool) -> None:
    import re

    assert bool(re.fullmatch(template["Parameters"]["RequesterPays"]["AllowedPattern"], value)) is ok


def test_linters_and_checkov_pass_with_source_buckets_and_topics(tmp_path: Path) -> None:
    copy = _with_defaults(tmp_path, SourceBuckets=SOURCE_BUCKETS, RequesterPays="usgs-landsat",
                          SourceTopics=SOURCE_TOPICS)
    result = _run([_require("cfn-lint"), str(copy)])
    assert result.returncode == 0, result.stdout + result.stderr
    result = _run([_require("sam"), "validate", "--lint", "--template-file", str(copy)])
    assert result.returncode == 0 and "valid SAM Template" in result.stdout + result.stderr, result.stdout + result.stderr
    import json

    result = _run([_checkov(), "-f", str(copy), "--framework", "cloudformation", "--skip-download", "--quiet", "-o", "json"])
    report = json.loads(result.stdout)
    assert report["summary"]["failed"] == 0 and report["summary"]["passed"] > 0, report["results"]["failed_checks"]


def test_stac_parameters_reach_the_function(template: dict[str, Any]) -> None:
    """StacAssets / StacFilter become SCENECLIP_STAC_*; the defaults (empty) are valid settings."""
    import re

    from sceneclip.aws.stac_config import StacSettings

    env = Stack(template).props("ClipFunction")["Environment"]["Variables"]
    assert StacSettings.from_env(env).filter is None
    given = Stack(template, StacAssets="red,nir08", StacFilter="eo:cloud_cover < 20")
    env = given.props("ClipFunction")["Environment"]["Variables"]
    assert env["SCENECLIP_STAC_ASSETS"] == "red,nir08"
    assert StacSettings.from_env(env).filter.matches({"properties": {"eo:cloud_cover": 5}})
    pattern = template["Parameters"]["StacAssets"]["AllowedPattern"]
    assert re.fullmatch(pattern, "red,nir08") and not re.fullmatch(pattern, "red, nir08")
    assert StacSettings.from_env(env).stack is False
    stacked = Stack(template, StacStack="true").props("ClipFunction")["Environment"]["Variables"]
    assert stacked["SCENECLIP_STAC_STACK"] == "true" and StacSettings.from_env(stacked).stack is True
