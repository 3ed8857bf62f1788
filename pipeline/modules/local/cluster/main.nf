/*
 * CLUSTER: neighbours on the integrated space, leiden at each configured resolution
 * (obs["leiden"], obs["leiden_<res>"]) and UMAP (obsm["X_umap"],
 * obsm["X_umap_unintegrated"]).
 */
process CLUSTER {
    tag "${meta.id}"
    label 'process_medium'

    input:
    tuple val(meta), path(h5ad, stageAs: 'input/*')
    path config

    output:
    tuple val(meta), path("${prefix}.clustered.h5ad"), emit: h5ad
    path "versions.yml"                              , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix   = task.ext.prefix ?: "${meta.id}"
    """
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus} NUMBA_NUM_THREADS=${task.cpus}
    bonemet cluster \\
        --input ${h5ad} \\
        --config ${config} \\
        ${args} \\
        --output ${prefix}.clustered.h5ad

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(bonemet --version 2>&1 | sed 's/^bonemet //')
    END_VERSIONS
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.clustered.h5ad
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(python -c "from importlib.metadata import version; print(version('bonemet'))" 2>/dev/null || echo stub)
    END_VERSIONS
    """
}
