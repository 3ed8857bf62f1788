/*
 * MAKE_CONFIG: the run's one source of truth for parameters.
 *
 * `bonemet config` merges configs/default.yaml, the user's --config file (if any) and the
 * --set overrides built from pipeline parameters, validates the result with bonemet's
 * pydantic schema (unknown keys and bad values fail here, before any data is touched) and
 * writes config.yaml, plus stages/<stage>.yaml with only the keys each stage reads: a task
 * gets its own slice, so a changed report setting does not re-run scVI under -resume.
 * Groovy holds no defaults.
 */
process MAKE_CONFIG {
    tag "${meta.id}"
    label 'process_single'

    input:
    val  meta
    path base_config      // [] when the user gave no --config
    val  overrides        // list of 'section.key=value' strings

    output:
    path "config.yaml" , emit: config
    path "stages/*.yaml", emit: stages
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args     = task.ext.args ?: ''
    def base_arg = base_config ? "--config ${base_config}" : ''
    def set_args = overrides.collect { "--set '${it}'" }.join(' ')
    """
    bonemet config \\
        ${base_arg} \\
        ${set_args} \\
        ${args} \\
        --stage-dir stages \\
        --output config.yaml

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(bonemet --version 2>&1 | sed 's/^bonemet //')
    END_VERSIONS
    """

    stub:
    """
    touch config.yaml
    mkdir -p stages
    for s in ingest qc merge integrate cluster annotate score compare ligrec report; do touch stages/\$s.yaml; done
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(python -c "from importlib.metadata import version; print(version('bonemet'))" 2>/dev/null || echo stub)
    END_VERSIONS
    """
}
