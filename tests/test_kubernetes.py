"""docs/kubernetes/train.yaml and sweep.yaml (docs/kubernetes.md), checked without a cluster: every document against
the Kubernetes API's schema as the `kubernetes` Python client's models have it (every key a field of its object at
every level, required fields present, types strict), their command lines the ones tests/test_hosts.py runs and
parsed by the CLI itself, the names that tie the documents together the same, and the specs of their ConfigMaps
valid. Skipped without the client (`pip install kubernetes`)."""

from __future__ import annotations

import copy
import re
import shlex

import pytest
import yaml

from conftest import ROOT, in_process
from mnist_keras.cli import main

kubernetes = pytest.importorskip("kubernetes", minversion="37", reason="the manifests are checked against the "
                                 "models of the kubernetes Python client 37 or later: pip install kubernetes")
from kubernetes import client  # noqa: E402

MANIFESTS = ROOT / "docs" / "kubernetes"
PAGE = ROOT / "docs" / "kubernetes.md"
PASSWORD = "s3cretPassw0rd"
# Each kind the manifests use, with its API group/version: the client's models do not say which group a kind is in.
API_VERSIONS = {"Service": "v1", "ConfigMap": "v1", "Secret": "v1", "PersistentVolumeClaim": "v1", "Pod": "v1",
                "Deployment": "apps/v1", "StatefulSet": "apps/v1", "Job": "batch/v1"}
PRIMITIVES = {"str": str, "int": int, "float": (int, float), "bool": bool, "bytes": str, "datetime": str,
              "date": str, "object": object}


def documents(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc is not None]


def page_documents() -> list[dict]:
    """The Kubernetes objects of docs/kubernetes.md's YAML blocks (the claim of the data and the pod that fills it)."""
    blocks = re.findall(r"```yaml\n(.*?)```", PAGE.read_text(), re.S)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if isinstance(doc, dict) and "kind" in doc]


def unknown_keys(value, type_name: str, where: str) -> list[str]:
    """Where `value` (a manifest's YAML, below `where`) has a key that is no field of the model `type_name`, or a
    value of the wrong kind, at any depth: the client's own from_dict ignores unknown keys and takes snake_case ones,
    which the API server refuses."""
    if match := re.fullmatch(r"(?:List\[|list\[)(.+)\]", type_name):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {value!r}"]
        return [problem for i, item in enumerate(value) for problem in unknown_keys(item, match[1], f"{where}[{i}]")]
    if match := re.fullmatch(r"(?:Dict\[|dict\()str, (.+)[\])]", type_name):
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping, got {value!r}"]
        return [problem for key, item in value.items() for problem in unknown_keys(item, match[1], f"{where}.{key}")]
    if type_name in PRIMITIVES:
        kind = PRIMITIVES[type_name]
        wrong = not isinstance(value, kind) or (type_name == "int" and isinstance(value, bool))
        return [f"{where}: expected {type_name}, got {value!r}"] if wrong else []
    model = getattr(client, type_name)
    if not isinstance(value, dict):
        return [f"{where}: expected a {type_name} mapping, got {value!r}"]
    fields = {key: attribute for attribute, key in model.attribute_map.items()}
    problems = []
    for key, item in value.items():
        if key not in fields:
            problems.append(f"{where}.{key}: not a field of {type_name} (its fields: {', '.join(sorted(fields))})")
        else:
            problems += unknown_keys(item, model.openapi_types[fields[key]], f"{where}.{key}")
    return problems


def check(doc: dict) -> list[str]:
    """What the Kubernetes API would refuse in `doc`, one line each; [] for a valid object."""
    kind = doc.get("kind")
    where = f"{kind} {doc.get('metadata', {}).get('name')}"
    if kind not in API_VERSIONS:
        return [f"{where}: a kind this test does not know"]
    if doc.get("apiVersion") != API_VERSIONS[kind]:
        return [f"{where}: apiVersion {doc.get('apiVersion')!r}, expected {API_VERSIONS[kind]!r}"]
    type_name = "V1" + kind
    problems = unknown_keys(doc, type_name, where)
    try:
        getattr(client, type_name).from_dict(doc)  # required fields and strict types (pydantic's ValidationError)
    except ValueError as err:
        problems.append(f"{where}: {err}")
    if not doc.get("metadata", {}).get("name"):
        problems.append(f"{where}: metadata.name is required")
    return problems


def named(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [doc for doc in docs if doc["kind"] == kind and name in (None, doc["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''} in the manifest, found {len(found)}"
    return found[0]


def pod_spec(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def mounts(job: dict) -> dict[str, dict]:
    """Each mount path of the Job's container -> its volume."""
    spec = pod_spec(job)
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    return {mount["mountPath"]: volumes[mount["name"]] for mount in spec["containers"][0]["volumeMounts"]}


@pytest.mark.parametrize("name", ["train.yaml", "sweep.yaml", "kubernetes.md"])
def test_every_document_is_valid_for_the_kubernetes_api(name):
    docs = page_documents() if name.endswith(".md") else documents(name)
    assert docs
    assert [problem for doc in docs for problem in check(doc)] == []


@pytest.mark.parametrize("mistake, message", [
    (lambda job: job["spec"].update(completionsMode=job["spec"].pop("completionMode")),
     "Job mnist-train.spec.completionsMode: not a field of V1JobSpec"),
    (lambda job: job["spec"].update(restartPolicy=pod_spec(job).pop("restartPolicy")),
     "Job mnist-train.spec.restartPolicy: not a field of V1JobSpec"),
    (lambda job: job["spec"].update(backoff_limit_per_index=job["spec"].pop("backoffLimitPerIndex")),
     "Job mnist-train.spec.backoff_limit_per_index: not a field of V1JobSpec"),
    (lambda job: pod_spec(job)["containers"][0]["volumeMounts"][0].update(mountpath="/specs"),
     "Job mnist-train.spec.template.spec.containers[0].volumeMounts[0].mountpath: not a field of V1VolumeMount"),
    (lambda job: pod_spec(job)["containers"][0].pop("name"), "V1Container\nname"),
    (lambda job: job["spec"].update(completions="3"), "Job mnist-train.spec.completions: expected int, got '3'"),
    (lambda job: pod_spec(job)["containers"][0]["ports"][0].update(containerPort=True), "expected int, got True"),
])
def test_the_check_refuses_a_mistake(mistake, message):
    """The checker can fail: a misspelled key, a key at the wrong level, a snake_case key, a missing required field
    or a value of the wrong type in the training Job is refused."""
    job = copy.deepcopy(named(documents("train.yaml"), "Job"))
    assert check(job) == []
    mistake(job)
    assert message in "\n".join(check(job))


def filled(args: list[str], index: int = 0) -> list[str]:
    """The arguments as a pod's process gets them: the index of an Indexed Job's pod, the password of the Secret."""
    return [arg.replace("$JOB_COMPLETION_INDEX", str(index)).replace("$(POSTGRES_PASSWORD)", PASSWORD) for arg in args]


def fit_arguments(job: dict) -> list[str]:
    """The training container's command line as the shell of `sh -c` splits it, without `exec mnist-keras`."""
    container = pod_spec(job)["containers"][0]
    assert container["command"] == ["sh", "-c"] and len(container["args"]) == 1
    words = shlex.split(container["args"][0])
    assert words[:2] == ["exec", "mnist-keras"], words
    return words[2:]


def test_training_runs_the_command_of_the_namespace_hosts_on_an_indexed_job():
    from mnist_keras.train.cluster import cluster_from_flags

    docs = documents("train.yaml")
    job, service = named(docs, "Job"), named(docs, "Service")
    spec, name, workers = job["spec"], job["metadata"]["name"], 3
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", workers, workers)
    assert pod_spec(job)["restartPolicy"] == "Never" and spec["backoffLimitPerIndex"] >= 1
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["selector"] == {"job-name": name}
    assert pod_spec(job)["subdomain"] == service["metadata"]["name"]
    port = service["spec"]["ports"][0]["port"]
    assert pod_spec(job)["containers"][0]["ports"][0]["containerPort"] == port == 12345

    # tests/test_hosts.py's fit_command: fit SPEC --runs RUNS --distribute multi_worker --workers A,B,C
    # --worker-index I, then more; pod N is host name NAME-N (an Indexed Job's) in the Service's subdomain
    args = fit_arguments(job)
    addresses = ",".join(f"{name}-{index}.{service['metadata']['name']}:{port}" for index in range(workers))
    assert args[0] == "fit" and args[2::2][:4] == ["--runs", "--distribute", "--workers", "--worker-index"], args
    assert args[5:10] == ["multi_worker", "--workers", addresses, "--worker-index", "$JOB_COMPLETION_INDEX"]
    at = mounts(job)
    assert at[args[3]]["persistentVolumeClaim"]["claimName"] == named(docs, "PersistentVolumeClaim")["metadata"]["name"]
    folder, file = args[1].rsplit("/", 1)
    assert file in named(docs, "ConfigMap", at[folder]["configMap"]["name"])["data"]
    assert args[10:] == ["--data-dir", "/data/mnist"] and "persistentVolumeClaim" in at["/data/mnist"]

    for index in range(workers):  # the CLI's own parser and cluster check, as each pod runs it
        line = filled(args, index)
        context = main.commands["fit"].make_context("fit", line[1:])
        assert context.params["distribute"] == "multi_worker"
        cluster = cluster_from_flags(context.params["workers"], context.params["worker_index"])
        assert cluster["cluster"]["worker"] == addresses.split(",") and cluster["task"]["index"] == index


def sweep_arguments(job: dict) -> list[str]:
    container = pod_spec(job)["containers"][0]
    words = container["command"] + container["args"]
    assert words[0] == "mnist-keras", words
    return words[1:]


def env(container: dict) -> dict:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}


def test_the_sweep_runs_the_command_of_the_namespace_hosts_on_one_postgresql_study():
    from sqlalchemy.engine import make_url

    docs = documents("sweep.yaml")
    job, database = named(docs, "Job"), named(docs, "Deployment")
    assert (job["spec"]["parallelism"], job["spec"]["completions"]) == (3, 3)

    # tests/test_hosts.py's sweep_command: sweep SWEEP_FILE --storage URL --study NAME --jobs 1, then more
    args = sweep_arguments(job)
    assert args[0] == "sweep" and args[2:7:2] == ["--storage", "--study", "--jobs"] and args[7] == "1", args
    assert args[8:] == ["--runs", "/runs", "--data-dir", "/data/mnist"]
    line = filled(args)
    context = main.commands["sweep"].make_context("sweep", line[1:])
    assert (context.params["study_name"], context.params["jobs"]) == ("mnist", 1)

    # the URL names the Service, the user and database the server is made with, and the password of its Secret
    url, service, secret = make_url(context.params["storage"]), named(docs, "Service"), named(docs, "Secret")
    server, sweeper = pod_spec(database)["containers"][0], pod_spec(job)["containers"][0]
    assert (url.drivername, url.host, url.port) == ("postgresql", service["metadata"]["name"],
                                                    service["spec"]["ports"][0]["port"])
    assert service["spec"]["selector"] == database["spec"]["template"]["metadata"]["labels"]
    assert (url.username, url.database, url.password) == (env(server)["POSTGRES_USER"], env(server)["POSTGRES_DB"],
                                                           PASSWORD)
    reference = {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "password"}}
    assert env(server)["POSTGRES_PASSWORD"] == env(sweeper)["POSTGRES_PASSWORD"] == reference
    assert "password" in secret["stringData"]

    at = mounts(job)
    folder, file = args[1].rsplit("/", 1)
    assert file in named(docs, "ConfigMap", at[folder]["configMap"]["name"])["data"]
    assert "ReadWriteMany" in named(docs, "PersistentVolumeClaim", at["/runs"]["persistentVolumeClaim"]["claimName"]
                                    )["spec"]["accessModes"]  # a trial retried on another pod resumes its run


@pytest.mark.parametrize("name", ["train.yaml", "sweep.yaml"])
def test_the_specs_of_the_config_maps_are_valid(name, tmp_path):
    """`mnist-keras validate` passes each file of the ConfigMap (written beside each other, as mounted), with the
    command's --set values and its --distribute; lenet5.yaml is model_specs/lenet5.yaml."""
    docs = documents(name)
    args = fit_arguments(named(docs, "Job")) if name == "train.yaml" else sweep_arguments(named(docs, "Job"))
    data = named(docs, "ConfigMap")["data"]
    for file, text in data.items():
        (tmp_path / file).write_text(text)
    assert yaml.safe_load(data["lenet5.yaml"]) == yaml.safe_load((ROOT / "model_specs" / "lenet5.yaml").read_text())
    command = main.commands[args[0]].make_context(args[0], filled(args)[1:])
    overrides = [f"--set={value}" for value in command.params["overrides"]]
    if command.params.get("distribute"):
        overrides.append(f"--set=runtime.distribute={command.params['distribute']}")
    result = in_process("validate", *sorted(data), *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok: ") == len(data)
