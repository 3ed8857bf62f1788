/*
 * INTEGRATE: scVI on the highly variable genes (obsm["X_scVI"]), or the configured
 * fallback (harmony, pca, none). Runs on a GPU node under the gpu profile; the scVI model
 * is saved in model/ when integrate.save_model is true.
 */
process INTEGRATE {
    tag "${meta.id}"
    label 'process_gpu'

    input:
    tuple val(meta), path(h5ad, stageAs: 'input/*')
    val  config_yaml   // this stage's slice of config.yaml, as text: -resume compares it by value

    output:
    tuple val(meta), path("${prefix}.integrated.h5ad"), emit: h5ad
    path "model"                                      , emit: model, optional: true
    path "versions.yml"                               , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def config_b64 = config_yaml.toString().bytes.encodeBase64().toString()  // one safe shell word
    def args = task.ext.args ?: ''
    prefix   = task.ext.prefix ?: "${meta.id}"
    """
    python3 -c "import base64; open('stage_config.yaml', 'wb').write(base64.b64decode('${config_b64}'))"
    export BONEMET_THREADS=${task.cpus} OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus} NUMBA_NUM_THREADS=${task.cpus}
    bonemet integrate \\
        --input ${h5ad} \\
        --model-dir model \\
        --config stage_config.yaml \\
        ${args} \\
        --output ${prefix}.integrated.h5ad

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(bonemet --version 2>&1 | sed 's/^bonemet //')
        torch: \$(python -c "from importlib.metadata import version; print(version('torch'))" 2>/dev/null || echo unknown)
        scvi-tools: \$(python -c "from importlib.metadata import version; print(version('scvi-tools'))" 2>/dev/null || echo unknown)
    END_VERSIONS
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.integrated.h5ad
    mkdir -p model && touch model/model.pt
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(python -c "from importlib.metadata import version; print(version('bonemet'))" 2>/dev/null || echo stub)
    END_VERSIONS
    """
}
