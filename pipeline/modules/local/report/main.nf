/*
 * REPORT: CSV tables, figures (PNG/PDF) and the self-contained report.html of the run,
 * plus the final annotated bonemet.h5ad. Written into the task folder, published to
 * OUTDIR/{bonemet.h5ad,report.html,tables/,figures/}.
 */
process REPORT {
    tag "${meta.id}"
    label 'process_medium'

    input:
    tuple val(meta), path(h5ad, stageAs: 'input/*')
    path config

    output:
    tuple val(meta), path("bonemet.h5ad"), emit: h5ad
    path "report.html"                   , emit: html
    path "tables"                        , emit: tables
    path "figures"                       , emit: figures, optional: true
    path "versions.yml"                  , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    export BONEMET_THREADS=${task.cpus} OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus} NUMBA_NUM_THREADS=${task.cpus}
    export MPLBACKEND=Agg MPLCONFIGDIR=\$PWD/.mplconfig
    bonemet report \\
        --input ${h5ad} \\
        --config ${config} \\
        ${args} \\
        --output .

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(bonemet --version 2>&1 | sed 's/^bonemet //')
    END_VERSIONS
    """

    stub:
    """
    touch bonemet.h5ad report.html
    mkdir -p tables figures
    touch tables/qc_summary.csv figures/umap_population.png
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(python -c "from importlib.metadata import version; print(version('bonemet'))" 2>/dev/null || echo stub)
    END_VERSIONS
    """
}
