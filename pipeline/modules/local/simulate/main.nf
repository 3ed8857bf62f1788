/*
 * SIMULATE: generated bone-metastasis counts (known populations, batch effects, ambient
 * RNA, doublets) as one .h5ad per sample plus a samplesheet. Used by the test profile.
 */
process SIMULATE {
    tag "${meta.id}"
    label 'process_single'

    input:
    val meta     // [id:, cells:, samples:, species:, seed:]

    output:
    tuple val(meta), path("simulated/samplesheet.csv"), emit: samplesheet
    path "simulated/*.h5ad"                            , emit: h5ad
    path "versions.yml"                                , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    export BONEMET_THREADS=${task.cpus} OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus} NUMBA_NUM_THREADS=${task.cpus}
    bonemet simulate \\
        --out simulated \\
        --cells ${meta.cells} \\
        --samples ${meta.samples} \\
        --species ${meta.species} \\
        --seed ${meta.seed} \\
        ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(bonemet --version 2>&1 | sed 's/^bonemet //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p simulated
    echo "sample,path,format,condition" > simulated/samplesheet.csv
    for i in \$(seq 1 ${meta.samples}); do
        touch simulated/sample\$i.h5ad
        echo "sample\$i,\$PWD/simulated/sample\$i.h5ad,h5ad,stub" >> simulated/samplesheet.csv
    done
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(python -c "from importlib.metadata import version; print(version('bonemet'))" 2>/dev/null || echo stub)
    END_VERSIONS
    """
}
