/*
 * MERGE: concatenate the per-sample QC'd .h5ad files (sorted by sample id, so the order of
 * arrival does not matter), normalise (counts kept in layers["counts"], X = log1p CP10k)
 * and select batch-aware highly variable genes.
 */
process MERGE {
    tag "${meta.id}"
    label 'process_medium'

    input:
    tuple val(meta), path(h5ads, stageAs: 'samples/*')
    val  config_yaml   // this stage's slice of config.yaml, as text: -resume compares it by value

    output:
    tuple val(meta), path("${prefix}.merged.h5ad"), emit: h5ad
    path "versions.yml"                           , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def config_b64 = config_yaml.toString().bytes.encodeBase64().toString()  // one safe shell word
    def args  = task.ext.args ?: ''
    prefix    = task.ext.prefix ?: "${meta.id}"
    def files = (h5ads instanceof List ? h5ads : [h5ads]).collect { it.toString() }.sort().join(' ')
    """
    python3 -c "import base64; open('stage_config.yaml', 'wb').write(base64.b64decode('${config_b64}'))"
    export BONEMET_THREADS=${task.cpus} OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus} NUMBA_NUM_THREADS=${task.cpus}
    bonemet merge \\
        --input ${files} \\
        --config stage_config.yaml \\
        ${args} \\
        --output ${prefix}.merged.h5ad

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(bonemet --version 2>&1 | sed 's/^bonemet //')
    END_VERSIONS
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.merged.h5ad
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(python -c "from importlib.metadata import version; print(version('bonemet'))" 2>/dev/null || echo stub)
    END_VERSIONS
    """
}
