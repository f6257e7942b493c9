"""``python -m pipelines``: compile, submit, upload, schedule, submit-kfp, run-local, demo.

Every command that sends the pipeline somewhere compiles it first (or takes ``--template``), checks
parameters and options, and only then makes a request. User errors print one line, no traceback; so does
an endpoint that cannot be reached (refused, unknown host, TLS, proxy, timeout, unavailable): the line
names the endpoint and what to check, exit code 1.

``demo`` is the main job (``make demo``): ``run-local`` under its own name, with the same options and
defaults (the embedded synthetic data). The terminal shows each stage's progress, results and status, then
the report; all of the tasks' output is in the log file the report names, and on the terminal too with
``-v``.
"""

from __future__ import annotations

import functools

import click

from deepface.cli import UserErrorGroup, configure_logging

PARAM_HELP = "Pipeline parameter override NAME=VALUE (repeatable), e.g. --param epochs=5; see `compile --list-params`."


class PipelinesGroup(UserErrorGroup):
    """Plain click group (its own commands, listed with their short help) with the project's user-error
    handling (one line, exit code 1); not `deepface.cli.LazyGroup`, which lists deepface's stages."""

    def error_message(self, error: Exception) -> str | None:
        """A connection failure (an OSError too) as "cannot reach ..."; else as any deepface command."""
        from pipelines.submit import connection_failure, unreachable

        failure = connection_failure(error)
        if failure is None:
            return super().error_message(error)
        where = _failure_url(failure) or "an endpoint"
        return str(unreachable("a service", where, "check the network, a proxy (HTTPS_PROXY) or firewall in the "
                               "way, and the address given, then try again", failure))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List this group's commands with the first sentence of their help, wrapped rather than cut."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=200)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _failure_url(failure: BaseException) -> str | None:
    """The URL (or host) a connection failure was about, when the exception says."""
    request = getattr(failure, "request", None)
    if getattr(request, "url", None):
        return str(request.url).split("?")[0]
    pool, url = getattr(failure, "pool", None), getattr(failure, "url", None)
    if pool is not None and getattr(pool, "host", None):
        return f"{pool.scheme}://{pool.host}:{pool.port}{(url or '').split('?')[0]}"
    return None


def compile_options(command):
    """Options that fix the training hardware in the compiled template."""
    options = [
        click.option("--training", type=click.Choice(["pipeline", "custom-job"]), default="pipeline", show_default=True,
                     help="pipeline: an ordinary task (CPU/GPU); "
                          "custom-job: a Vertex AI custom training job (TPU, multi-worker)."),
        click.option("--train-cpu", default="8", show_default=True,
                     help="CPU limit of the training task (--training pipeline)."),
        click.option("--train-memory", default="32G", show_default=True,
                     help="Memory limit of the training task (--training pipeline)."),
        click.option("--accelerator", default="",
                     help="Accelerator type, e.g. NVIDIA_L4, NVIDIA_TESLA_T4, TPU_V5_LITEPOD (TPU v5e, custom-job). "
                          "Default: none."),
        click.option("--accelerator-count", type=int, default=1, show_default=True,
                     help="Accelerators per training machine."),
        click.option("--machine-type", default="n1-standard-8", show_default=True,
                     help="Machine of each training replica (--training custom-job), e.g. ct5lp-hightpu-4t."),
        click.option("--replicas", type=int, default=1, show_default=True,
                     help="Training machines (--training custom-job); >1: multi-worker."),
        click.option("--tensorboard", default="", metavar="NAME",
                     help="Vertex AI TensorBoard instance the custom training job uploads its logs to "
                          "(--training custom-job), projects/P/locations/REGION/tensorboards/ID in the run's "
                          "region. A compile option: it is fixed in the template. Default: none."),
    ]
    for option in reversed(options):
        command = option(command)

    @functools.wraps(command)
    def wrapper(*, training, train_cpu, train_memory, accelerator, accelerator_count, machine_type, replicas,
                tensorboard, **kwargs):
        from pipelines.pipeline import CompileOptions

        options = CompileOptions(
            training=training, train_cpu=train_cpu, train_memory=train_memory, accelerator=accelerator,
            accelerator_count=accelerator_count, machine_type=machine_type, replicas=replicas,
            tensorboard=tensorboard,
        ).check()
        return command(options=options, **kwargs)

    return wrapper


def run_options(command):
    """Options of a pipeline run: template, parameters, caching."""
    options = [
        click.option("--template", type=click.Path(dir_okay=False), default=None,
                     help="A compiled template to use instead of compiling now (compile options are then ignored)."),
        click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help=PARAM_HELP),
        click.option("--cache/--no-cache", "enable_caching", default=None,
                     help="Force task caching on or off for this run. Default: the template's settings (on)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def vertex_options(command):
    """Where a Vertex AI run goes and as whom."""
    options = [
        click.option("--project", envvar="GOOGLE_CLOUD_PROJECT", help="Google Cloud project ($GOOGLE_CLOUD_PROJECT)."),
        click.option("--region", envvar="GOOGLE_CLOUD_REGION",
                     help="Vertex AI region, e.g. us-central1 ($GOOGLE_CLOUD_REGION)."),
        click.option("--pipeline-root", help="Cloud Storage folder for the run's artifacts, gs://BUCKET/PATH."),
        click.option("--service-account", default=None, help="Service account the run executes as."),
        click.option("--network", default=None,
                     help="VPC network to peer with, projects/NUMBER/global/networks/NAME (the custom training "
                          "job's too)."),
        click.option("--encryption-key", default=None, metavar="KEY",
                     help="Cloud KMS key (customer-managed encryption) of the run and of what it creates, the "
                          "custom training job included: projects/P/locations/REGION/keyRings/R/cryptoKeys/K, "
                          "in the run's region."),
        click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
                     help="Run label (repeatable), after the default deepface-image-tag and deepface-git-revision. "
                          "Compiling now (no --template), also on the custom training job, where they are part "
                          "of the training step's cache key."),
        click.option("--experiment", default=None, metavar="NAME",
                     help="Vertex AI Experiment to file the run under (created if missing). submit only: Vertex AI "
                          "cannot file a schedule's runs under an experiment."),
        click.option("--display-name", default=None, help="Name shown in the console (default: deepface-pipeline)."),
        click.option("--api-endpoint", default=None, hidden=True,
                     help="Vertex AI API endpoint (a regional, private or test endpoint); "
                          "http:// gets no credentials."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _vertex_job_options(template, *, params, enable_caching, project, region, pipeline_root, labels,
                        display_name, encryption_key, api_endpoint) -> dict:
    from pipelines.params import parse_labels, parse_overrides

    return dict(
        project=project, region=region, pipeline_root=pipeline_root, parameters=parse_overrides(template.spec, params),
        labels=parse_labels(labels), enable_caching=enable_caching, display_name=display_name,
        encryption_key=encryption_key, api_endpoint=api_endpoint,
    )


def _with_run_labels(options, template, labels):
    """The compile options of a template compiled now for a run: the run's labels on the custom training
    job too (a given template keeps its own)."""
    import dataclasses

    from pipelines.params import parse_labels

    if template is not None:
        return options
    return dataclasses.replace(options, labels=tuple(parse_labels(labels).items()))


@click.group(cls=PipelinesGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages of deepface, pipelines and components.")
def main(verbose: bool) -> None:
    """Compile, submit, upload, schedule and run the DeepFace pipeline (KFP v2 / Vertex AI)."""
    configure_logging(verbose)


@main.command("compile")
@click.option("--output", "-o", default="deepface-pipeline.yaml", show_default=True, type=click.Path(dir_okay=False),
              help="Where to write the pipeline template (YAML).")
@click.option("--list-params", is_flag=True, help="Print the pipeline parameters with their defaults and descriptions.")
@compile_options
def compile_command(options, output: str, list_params: bool) -> None:
    """Write the pipeline template; the same code and options give the same file."""
    from pipelines.pipeline import compile_pipeline
    from pipelines.submit import load_template

    path = compile_pipeline(output, options)
    click.echo(f"wrote {path}")
    if list_params:
        from pipelines.params import parameter_specs

        for name, spec in sorted(parameter_specs(load_template(path).spec).items()):
            default = spec.get("defaultValue")
            default = int(default) if spec["parameterType"] == "NUMBER_INTEGER" else default
            description = " ".join(spec.get("description", "").split())
            click.echo(f"  {name} = {default!r} ({spec['parameterType'].lower()}): {description}")


@main.command("submit")
@vertex_options
@run_options
@click.option("--wait/--no-wait", default=False, show_default=True, help="Wait for the run to finish.")
@compile_options
def submit_command(options, template, params, enable_caching, service_account, network, experiment, wait,
                   **vertex) -> None:
    """Start a Vertex AI pipeline run and print its console URL."""
    from pipelines.submit import check_experiment, console_url, submit_vertex
    from pipelines.submit import template as open_template

    check_experiment(experiment)
    with open_template(template, _with_run_labels(options, template, vertex["labels"])) as spec:
        job = submit_vertex(spec, wait=wait, service_account=service_account, network=network, experiment=experiment,
                            **_vertex_job_options(spec, params=params, enable_caching=enable_caching, **vertex))
    click.echo(f"run: {console_url(job.resource_name)}")
    if wait:
        click.echo(f"state: {job.state.name}")


@main.command("schedule")
@vertex_options
@run_options
@click.option("--cron", required=False,
              help='When to start a run: 5 cron fields, optionally after TZ=..., e.g. "TZ=Europe/Paris 0 3 * * 1".')
@click.option("--schedule-name", default=None, help="Name of the schedule (default: deepface-pipeline-schedule).")
@click.option("--max-runs", type=int, default=None, help="Stop after this many runs (default: no limit).")
@compile_options
def schedule_command(options, template, params, enable_caching, service_account, network, experiment, cron,
                     schedule_name, max_runs, **vertex) -> None:
    """Create a Vertex AI schedule that runs the pipeline at every cron time."""
    from pipelines.submit import check_schedule_experiment, console_url, schedule_vertex
    from pipelines.submit import template as open_template

    check_schedule_experiment(experiment)
    with open_template(template, _with_run_labels(options, template, vertex["labels"])) as spec:
        schedule = schedule_vertex(spec, cron=cron, schedule_name=schedule_name, max_runs=max_runs,
                                   service_account=service_account, network=network, experiment=experiment,
                                   **_vertex_job_options(spec, params=params, enable_caching=enable_caching, **vertex))
    click.echo(f"schedule: {console_url(schedule.resource_name)}")


@main.command("upload")
@click.option("--host", default=None,
              help="KFP registry URL, e.g. https://us-central1-kfp.pkg.dev/PROJECT/REPO "
                   "(or use --project/--region/--repository).")
@click.option("--project", envvar="GOOGLE_CLOUD_PROJECT", help="Google Cloud project ($GOOGLE_CLOUD_PROJECT).")
@click.option("--region", envvar="GOOGLE_CLOUD_REGION", help="Artifact Registry region ($GOOGLE_CLOUD_REGION).")
@click.option("--repository", default=None, help="Artifact Registry repository of format KFP.")
@click.option("--tag", "tags", multiple=True, help="Tag of the uploaded version (repeatable). Default: the image tag.")
@click.option("--template", type=click.Path(dir_okay=False), default=None,
              help="A compiled template to upload instead of compiling now.")
@compile_options
def upload_command(options, host, project, region, repository, tags, template) -> None:
    """Upload the pipeline template to Artifact Registry, to start runs from the Vertex AI console."""
    from components.image import image_reference
    from pipelines.submit import registry_host, upload_template
    from pipelines.submit import template as open_template

    url = registry_host(host, project, region, repository)
    tags = tags or (image_reference().rsplit(":", 1)[-1],)
    with open_template(template, options) as spec:
        package, version, template_url = upload_template(spec, url, tags)
    click.echo(f"uploaded {package} {version} tags {', '.join(tags)}")
    click.echo(f"template: {template_url}")


@main.command("submit-kfp")
@click.option("--host", envvar="KF_PIPELINES_ENDPOINT",
              help="Kubeflow Pipelines endpoint ($KF_PIPELINES_ENDPOINT). Token: $DEEPFACE_KFP_TOKEN.")
@click.option("--namespace", default=None, help="Kubernetes namespace (multi-user deployments).")
@click.option("--experiment", default="deepface", show_default=True, help="Experiment to file the run under.")
@click.option("--run-name", default=None, help="Name of the run.")
@click.option("--pipeline-root", default=None, help="Artifact root (minio://, s3://, gs://); default: the cluster's.")
@click.option("--service-account", default=None, help="Kubernetes service account of the run.")
@click.option("--wait/--no-wait", default=False, show_default=True, help="Wait for the run to finish.")
@run_options
@compile_options
def submit_kfp_command(options, host, namespace, experiment, run_name, pipeline_root, service_account, wait,
                       template, params, enable_caching) -> None:
    """Start a run on a Kubeflow Pipelines endpoint."""
    from pipelines.params import parse_overrides
    from pipelines.submit import submit_kfp
    from pipelines.submit import template as open_template

    with open_template(template, options) as spec:
        run_id, url = submit_kfp(
            spec, host=host, namespace=namespace, experiment=experiment, run_name=run_name,
            pipeline_root=pipeline_root, service_account=service_account,
            parameters=parse_overrides(spec.spec, params), enable_caching=enable_caching, wait=wait,
        )
    click.echo(f"run {run_id}: {url}")


def local_run_options(command):
    """Options of a run on this machine (run-local, demo): parameters, pipeline root, caching, verbosity."""
    options = [
        click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help=PARAM_HELP),
        click.option("--pipeline-root", default="local_outputs", show_default=True, type=click.Path(file_okay=False),
                     help="Local folder for the outputs and the cache."),
        click.option("--cache/--no-cache", "enable_caching", default=True, show_default=True,
                     help="Reuse unchanged tasks' outputs."),
        click.option("-v", "--verbose", is_flag=True,
                     help="Show every line the tasks print (the run's log under PIPELINE_ROOT/logs/ has them all)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command("run-local")
@local_run_options
def run_local_command(params, pipeline_root, enable_caching, verbose) -> None:
    """Run the whole pipeline here with kfp.local (default: the embedded synthetic data)."""
    run_local_and_report(params, pipeline_root=pipeline_root, enable_caching=enable_caching, verbose=verbose)


@main.command("demo")
@local_run_options
def demo_command(params, pipeline_root, enable_caching, verbose) -> None:
    """The main job (`make demo`): the whole pipeline here on the embedded synthetic data, then the report.

    The same as run-local: synth, fetch, labels, tfrecords, train and evaluate run through kfp.local; a
    rerun with the same parameters is served from the cache.
    """
    run_local_and_report(params, pipeline_root=pipeline_root, enable_caching=enable_caching, verbose=verbose)


def run_local_and_report(params=(), *, pipeline_root: str = "local_outputs", enable_caching: bool = True,
                         verbose: bool = False):
    """Run locally and print where each artifact landed and the evaluation summary (run-local and demo);
    ``verbose`` shows every line the tasks print (all of them are in the run's log either way)."""
    from pipelines.local import pipeline_spec_dict, run_local
    from pipelines.params import parse_overrides
    from pipelines.pipeline import make_pipeline

    values = parse_overrides(pipeline_spec_dict(make_pipeline()), params)
    run = run_local(values, pipeline_root=pipeline_root, enable_caching=enable_caching, verbose=verbose)
    click.echo(run.format())
    return run


if __name__ == "__main__":
    main()
