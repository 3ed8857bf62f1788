/*
 * LIGREC: ligand-receptor interactions per condition with LIANA+ (rank aggregate per
 * sample, counted across the condition's samples), stored in uns["bonemet_ligrec"] for the
 * report's tables and dot plot. Its own process, so a changed ligrec setting re-runs this
 * task and the report only, never COMPARE's tests and pseudobulk DE.
 */
process LIGREC {
    tag "${meta.id}"
    label 'process_medium'

    input:
    tuple val(meta), path(h5ad, stageAs: 'input/*')
    val  config_yaml   // this stage's slice of config.yaml, as text: -resume compares it by value

    output:
    tuple val(meta), path("${prefix}.ligrec.h5ad"), emit: h5ad
    path "versions.yml"                             , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def config_b64 = config_yaml.toString().bytes.encodeBase64().toString()  // one safe shell word
    def args = task.ext.args ?: ''
    prefix   = task.ext.prefix ?: "${meta.id}"
    """
    python3 -c "import base64; open('stage_config.yaml', 'wb').write(base64.b64decode('${config_b64}'))"
    export BONEMET_THREADS=${task.cpus} OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus} NUMBA_NUM_THREADS=${task.cpus}
    bonemet ligrec \\
        --input ${h5ad} \\
        --config stage_config.yaml \\
        ${args} \\
        --output ${prefix}.ligrec.h5ad

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(bonemet --version 2>&1 | sed 's/^bonemet //')
    END_VERSIONS
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.ligrec.h5ad
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(python -c "from importlib.metadata import version; print(version('bonemet'))" 2>/dev/null || echo stub)
    END_VERSIONS
    """
}
